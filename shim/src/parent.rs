//! Leaving when the MCP client goes away, even if our stdin stays open (a grandchild may hold
//! it), and on SIGTERM or SIGHUP.
//!
//! The exits here are `_exit`: there is nothing to clean up (stdout is unbuffered, the kernel
//! closes the socket and the daemon ends the session on EOF), and `_exit` is the only exit that
//! is safe inside a signal handler.

use std::sync::atomic::{AtomicI32, Ordering};

/// The parent we were started by, for the orphan checks.
static ORIGINAL_PARENT: AtomicI32 = AtomicI32::new(0);

/// Installs the signal handlers and arms parent-death detection. Call first thing in `main`,
/// before any other thread exists, so every thread inherits the signal mask set here.
pub fn watch() {
    let parent = std::os::unix::process::parent_id() as i32;
    ORIGINAL_PARENT.store(parent, Ordering::SeqCst);
    // A client may have started us with these signals ignored or blocked (both survive exec, as
    // `nohup` shows); a stdio relay has no reason to outlive a hangup or a termination request.
    install(libc::SIGTERM, on_stop);
    install(libc::SIGHUP, on_stop);
    arm_parent_death();
    if orphaned() {
        // The parent died before the watch was armed.
        exit_now(0);
    }
}

/// Whether the process that started us is gone (we were reparented).
fn orphaned() -> bool {
    std::os::unix::process::parent_id() as i32 != ORIGINAL_PARENT.load(Ordering::SeqCst)
}

fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and has no preconditions.
    unsafe { libc::_exit(code) }
}

extern "C" fn on_stop(_signal: libc::c_int) {
    exit_now(0);
}

/// Sets `handler` for `signal` and unblocks it in this thread.
fn install(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: `action` is fully initialised (zeroed, then the handler, an empty mask and
    // SA_RESTART set) before it is passed; the handler only calls async-signal-safe functions
    // (`getppid`, `_exit`) and reads an atomic. `pthread_sigmask` is given a valid set.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Linux: the kernel signals us when our parent dies.
///
/// The signal is SIGUSR2 rather than SIGTERM because `PR_SET_PDEATHSIG` fires when the parent
/// *thread* that forked us exits, not the parent process: a client that spawns from a worker
/// thread which later ends (tokio's blocking pool, a Go runtime thread) would otherwise kill a
/// healthy session. The handler leaves only if we were really reparented; a deliberate SIGTERM
/// from the client still stops us unconditionally.
#[cfg(target_os = "linux")]
fn arm_parent_death() {
    extern "C" fn on_parent_death(_signal: libc::c_int) {
        if orphaned() {
            exit_now(0);
        }
    }
    install(libc::SIGUSR2, on_parent_death);
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and affects only this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2 as libc::c_ulong);
    }
}

/// Elsewhere: poll the parent pid once a second.
#[cfg(not(target_os = "linux"))]
fn arm_parent_death() {
    let watchdog = std::thread::Builder::new()
        .name("parent-watch".into())
        .stack_size(64 * 1024)
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                if orphaned() {
                    exit_now(0);
                }
            }
        });
    if let Err(e) = watchdog {
        eprintln!("mcp-shim: cannot watch for the client's exit: {e}");
    }
}
