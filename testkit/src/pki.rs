//! A certificate authority a test makes with the `openssl` command: a CA, a server
//! certificate for `127.0.0.1` and `localhost` signed by it, and a self-signed key pair a
//! token issuer signs registry tokens with. Everything lives in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes the CA, the server certificate and the token signing pair (RSA 2048).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        self_signed(d, "kiln test CA", "ca");
        openssl(d, &split("req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr"));
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(d, &split("x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt"));
        self_signed(d, "kiln test token signer", "signing");
        Pki { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM): what a client must trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A directory holding only `ca.crt`, as skopeo's `--cert-dir` wants it.
    pub fn cert_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("certs.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.ca_cert(), dir.join("ca.crt")).unwrap();
        dir
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The token signing certificate (self-signed): the registry's `rootcertbundle`.
    pub fn signing_cert(&self) -> PathBuf {
        self.dir.path().join("signing.crt")
    }

    pub fn signing_key(&self) -> PathBuf {
        self.dir.path().join("signing.key")
    }

    /// The DER bytes of a PEM certificate file.
    pub fn der(cert: &Path) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(cert)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

/// `NAME.key` and a self-signed `NAME.crt` for the common name `cn` (RSA 2048, 2 days).
fn self_signed(dir: &Path, cn: &str, name: &str) {
    let subject = format!("/CN={cn}");
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let mut args = split("req -x509 -newkey rsa:2048 -nodes -days 2");
    args.extend(["-subj", &subject, "-keyout", &key, "-out", &crt]);
    openssl(dir, &args);
}

fn split(command: &str) -> Vec<&str> {
    command.split(' ').collect()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
