//! Ctrl-C during `cnnc opt`: the first SIGINT asks the long steps to stop at their next
//! checkpoint (the cost measurement checks between kernels), so the driver can keep what was
//! measured and write nothing; a second one ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

/// Exit status of a process ended by SIGINT (128 + 2), as shells report it.
pub const EXIT_STATUS: u8 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The handler could not be installed (another one already is, or the OS refused).
#[derive(Debug, thiserror::Error)]
#[error("installing the Ctrl-C handler: {0}")]
pub struct InstallError(#[from] ctrlc::Error);

/// Installs the process-wide SIGINT handler. Call it once, from the binary, before a step that
/// checks [`requested`]; without it Ctrl-C ends the process as usual.
pub fn install() -> Result<(), InstallError> {
    ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: stopping now");
            std::process::exit(i32::from(EXIT_STATUS));
        }
    })?;
    Ok(())
}

/// True once Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
