//! Windows: the console control events that stop the daemon (Ctrl-C, Ctrl-Break, the console closing, logoff,
//! system shutdown), through SetConsoleCtrlHandler. Not the C runtime's `signal()`, which Unix's SIGINT and
//! SIGTERM handling would map to: it covers Ctrl-C only, and under Wine its handler jumps to a bad address
//! (docs/windows.md, "Stopping punchd").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use windows_sys::core::BOOL;
use windows_sys::Win32::System::Console::SetConsoleCtrlHandler;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Runs on a thread the system starts for the event. For the console closing, logoff and shutdown the
/// process ends when it returns: the loop may not get to clean up, and the router's mapping then expires by
/// itself.
unsafe extern "system" fn on_event(_event: u32) -> BOOL {
    match FLAG.get() {
        Some(flag) => {
            flag.store(true, Ordering::Relaxed);
            1
        }
        None => 0,
    }
}

/// A flag that any of those events sets.
pub fn shutdown_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)));
    // SAFETY: `on_event` is a plain function that stays valid for the life of the process.
    if unsafe { SetConsoleCtrlHandler(Some(on_event), 1) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Arc::clone(flag))
}
