//! How the daemon's typed errors become control replies: the whole message for people and a
//! machine-readable [`ErrorCode`] that `mcpctl` decides by (it never reads the message). A name
//! the daemon does not know is answered before any of these, with the typed
//! `ControlResponse::NoSuchServer` (`Daemon::unknown_server`); the variants below that say
//! the same cover a server removed by a reload in between.

use mcpd_proto::ControlResponse;
use mcpd_proto::control_error::ErrorCode;

use crate::auth::AuthError;
use crate::config::ConfigError;
use crate::observe::pins::ApproveError;
use crate::secrets::SecretError;
use crate::supervisor::ControlError;

/// An error a control request can end in.
pub(crate) trait ControlFailure: std::fmt::Display {
    /// The code sent with it; [`ErrorCode::Failed`] unless the variant says more.
    fn code(&self) -> ErrorCode {
        ErrorCode::Failed
    }

    /// The error reply.
    fn reply(&self) -> ControlResponse {
        ControlResponse::error_with(self.code(), self.to_string())
    }
}

impl ControlFailure for ControlError {}

impl ControlFailure for AuthError {}

impl ControlFailure for SecretError {}

impl ControlFailure for ConfigError {}

impl ControlFailure for ApproveError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_error_is_replied_with_its_whole_message() {
        let e = ControlError::UnknownServer {
            server: "nope".into(),
            known: "a, b".into(),
        };
        let ControlResponse::Error { code, message } = e.reply() else {
            panic!("not an error reply");
        };
        assert_eq!(code, ErrorCode::Failed);
        assert_eq!(message, "no server named `nope` (servers: a, b)");
        let ControlResponse::Error { message, .. } = SecretError::Empty.reply() else {
            panic!("not an error reply");
        };
        assert_eq!(
            message,
            "the value is empty; `mcpctl secret rm` forgets a secret"
        );
    }
}
