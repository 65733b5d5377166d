//! Debian's nginx in front of a plain gRPC server (buildbox-casd speaks no TLS and
//! checks no credentials), as engines are deployed behind a load balancer: TLS with a
//! certificate from a test's [`Pki`] (for `127.0.0.1` and `localhost`), HTTP/2, and a
//! bearer token checked on every request. A request without that exact
//! `authorization: Bearer <token>` is logged as HTTP 401 and answered as a gRPC
//! server would: UNAUTHENTICATED.

use std::path::Path;
use std::process::Child;

use crate::{free_port, wait_for_port, Pki};

pub struct GrpcTlsProxy {
    tmp: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl GrpcTlsProxy {
    /// Starts nginx forwarding to `127.0.0.1:target`, requiring `token`; panics if
    /// nginx is not installed (`.ci/install-deps` installs it).
    pub fn start(target: u16, pki: &Pki, token: &str) -> GrpcTlsProxy {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = tmp.path().join("nginx.conf");
        std::fs::write(&conf, conf_text(tmp.path(), port, target, pki, token)).unwrap();
        let error_log = tmp.path().join("error.log");
        let child = crate::spawn_nginx(tmp.path(), &conf, &error_log.display().to_string());
        let proxy = GrpcTlsProxy {
            tmp,
            child: Some(child),
            port,
        };
        wait_for_port(port);
        proxy
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `grpcs://localhost:PORT`: the name the certificate holds.
    pub fn url(&self) -> String {
        format!("grpcs://localhost:{}", self.port)
    }

    /// nginx's access log: one line per gRPC call, `ok` or `refused` (the token), the
    /// HTTP status and the method's path.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for GrpcTlsProxy {
    fn drop(&mut self) {
        crate::stop_nginx(&mut self.child);
    }
}

fn conf_text(tmp: &Path, port: u16, target: u16, pki: &Pki, token: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let t = tmp.display();
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let user = if root { "user root root;" } else { "" };
    let (cert, key) = (pki.server_cert(), pki.server_key());
    let (cert, key) = (cert.display(), key.display());
    // nginx 1.22 (bookworm) takes `http2` on `listen`; the `http2` directive is 1.25's.
    format!(
        "{user}
worker_processes 1;
events {{ worker_connections 256; }}
http {{
  log_format calls '$kiln_token $status $request_uri';
  access_log {t}/access.log calls;
  client_body_temp_path {t}/client_body;
  proxy_temp_path {t}/proxy;
  fastcgi_temp_path {t}/fastcgi;
  uwsgi_temp_path {t}/uwsgi;
  scgi_temp_path {t}/scgi;
  map $http_authorization $kiln_token {{
    default refused;
    \"Bearer {token}\" ok;
  }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_max_body_size 0;
    # A refusal as a gRPC server gives it (NGINX's API gateway recipe): status 16,
    # UNAUTHENTICATED, in the headers of an empty answer.
    error_page 401 = /grpc-unauthenticated;
    location = /grpc-unauthenticated {{
      internal;
      default_type application/grpc;
      add_header grpc-status 16;
      add_header grpc-message \"missing or wrong bearer token\";
      return 204;
    }}
    location / {{
      if ($kiln_token = refused) {{ return 401; }}
      grpc_pass grpc://127.0.0.1:{target};
      grpc_read_timeout 600s;
      grpc_send_timeout 600s;
    }}
  }}
}}
"
    )
}
