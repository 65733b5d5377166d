//! Descriptors kiln inherited, kept from every process it starts.
//!
//! A process gets every open descriptor of its parent that is not marked close-on-exec:
//! a CI runner's pipes, a make jobserver, a socket its caller left open. bubblewrap
//! passes them on too, so an action could write to, read from or hold open what its
//! sandbox was meant to keep it from. [`close_inherited_on_exec`], called first thing in
//! `main`, marks every descriptor above stderr close-on-exec; kiln itself keeps them.

/// See the module comment.
pub fn close_inherited_on_exec() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a number that may no longer be open (the directory's own)
        // only fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
