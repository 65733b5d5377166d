//! SIGINT and SIGTERM (Ctrl-C, `timeout`, a CI runner cancelling a job): kiln ends its
//! actions, not just itself.
//!
//! [`install`] blocks both signals in every thread and waits for them on one thread of
//! its own. When one arrives it kills the process group of every running action
//! (`kiln_engine::sandbox::kill_all`; under bubblewrap that ends the action's PID
//! namespace too), removes their sandboxes, writes the index's pending rows (results
//! that completed stay cached), and exits with 128 + the signal: 130 or 143.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use kiln_cache::{LocalStore, Store};

/// Set when a signal arrived: the build's own end must not exit before the handler does.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Weak: the store must still be dropped (its index closed) when the command ends.
static STORE: Mutex<Option<Weak<LocalStore>>> = Mutex::new(None);

/// Blocks SIGINT and SIGTERM and starts the thread that handles them. Call before any
/// other thread starts, so that every thread inherits the mask.
pub fn install() {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: sigwait(3) on the set blocked above.
        unsafe { libc::sigwait(&set, &mut signal) };
        interrupted(signal);
    });
}

/// The store whose pending index rows are written on an interrupt.
pub fn flush_on_interrupt(store: &Arc<LocalStore>) {
    *STORE.lock().unwrap() = Some(Arc::downgrade(store));
}

/// Called before kiln exits on its own: once a signal arrived, waits for its handler to
/// end the process. Killing the actions ends the build too, and its end would otherwise
/// race the handler: exit 1 (a failed action) instead of 130/143, with sandboxes and
/// views half removed.
pub fn wait_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

fn interrupted(signal: i32) -> ! {
    INTERRUPTED.store(true, Ordering::SeqCst);
    kiln_engine::sandbox::kill_all();
    kiln_cache::held::remove_all();
    let store = STORE.lock().unwrap().as_ref().and_then(Weak::upgrade);
    if let Some(store) = store {
        let _ = store.flush();
    }
    let name = if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    eprintln!("kiln: interrupted ({name}): running actions stopped, their sandboxes removed");
    std::process::exit(128 + signal)
}
