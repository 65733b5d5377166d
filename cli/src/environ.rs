//! kiln's own environment, wiped from where other processes can read it.
//!
//! `/proc/<pid>/environ` shows the memory a process was started with, whatever it does
//! with its variables later; a process of the same user (an action in `dir` mode, which
//! has no PID namespace) can read it, and with it tokens such as `KILN_REMOTE_TOKEN`.
//! [`scrub`], called first thing in `main` (before any thread starts), copies every
//! variable into memory of the C library's own (`setenv`), where kiln still finds them,
//! and overwrites the original strings with zeros. Actions never inherit kiln's
//! environment in any case: each gets only what it declares.

use std::ffi::{c_char, CStr, CString};

extern "C" {
    static mut environ: *mut *mut c_char;
}

/// See the module comment. Must run before any other thread exists.
pub fn scrub() {
    // SAFETY: single-threaded at this point (first thing in main); `environ` is the C
    // library's array of NUL-terminated "NAME=VALUE" strings, ended by a null pointer.
    unsafe {
        let mut originals = Vec::new();
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            originals.push(*p);
            p = p.add(1);
        }
        for &entry in &originals {
            let text = CStr::from_ptr(entry).to_bytes();
            let Some(eq) = text.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (CString::new(&text[..eq]), CString::new(&text[eq + 1..]))
            else {
                continue;
            };
            // setenv copies name and value into memory of its own.
            libc::setenv(name.as_ptr(), value.as_ptr(), 1);
        }
        for &entry in &originals {
            let len = libc::strlen(entry);
            std::ptr::write_bytes(entry, 0, len);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn variables_survive_the_scrub_and_proc_shows_none_of_them() {
        // The test harness runs tests in threads; this one only reads what it set up.
        let before = std::env::var("PATH").unwrap_or_default();
        super::scrub();
        assert_eq!(std::env::var("PATH").unwrap_or_default(), before);
        let shown = std::fs::read("/proc/self/environ").unwrap();
        assert!(
            shown.iter().all(|&b| b == 0),
            "{}",
            String::from_utf8_lossy(&shown)
        );
    }
}
