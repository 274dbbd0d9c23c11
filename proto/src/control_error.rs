//! Machine-readable codes of control errors: `mcpctl` decides by the code, never by the
//! daemon's wording (which is for people and may change).

use serde::{Deserialize, Serialize};

/// Why a control request failed, on [`crate::ControlResponse::Error`] as `"code"`. A daemon
/// older than the codes sends none: that reads as [`ErrorCode::Failed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The request was understood and failed; the message says why.
    #[default]
    Failed,
    /// The daemon does not know the command (it is older than this `mcpctl`).
    UnknownCommand,
    /// Not a control request this daemon can read (not JSON, too long).
    BadRequest,
    /// The connection cannot serve it now (a login is under way on it).
    Busy,
    /// A code this build does not know (a newer daemon).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// Whether it is the default, which is left out of the wire message.
    pub fn is_failed(&self) -> bool {
        *self == Self::Failed
    }
}
