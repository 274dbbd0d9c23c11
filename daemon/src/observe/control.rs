//! Control commands of this module: `tools diff`, `tools approve`, `tools check`, `stats`
//! (`traffic` is streamed: see [`super::traffic::stream`]).

use mcpd_proto::{ControlRequest, ControlResponse};

use super::Host;
use crate::control_failure::ControlFailure;
use crate::supervisor::ControlError;

/// Answers `request` if it is one of this module's; gives it back otherwise.
pub fn handle(
    daemon: &dyn Host,
    request: ControlRequest,
) -> Result<ControlResponse, ControlRequest> {
    let response = match request {
        ControlRequest::ToolsDiff { server } => match known(daemon, &server) {
            Err(e) => e.reply(),
            Ok(()) => match daemon.observer().pins.diff(&server) {
                Some(diff) => ControlResponse::ToolsDiff(diff),
                None => ControlResponse::error(format!(
                    "nothing is pinned for `{server}` yet: it has not listed its tools since it was configured"
                )),
            },
        },
        ControlRequest::ToolsApprove { server, tool } => match known(daemon, &server) {
            Err(e) => e.reply(),
            Ok(()) => {
                match daemon
                    .observer()
                    .pins
                    .approve(&server, tool.as_deref(), |name| {
                        daemon.namespaced(&server, name)
                    }) {
                    Ok(approved) => {
                        daemon.catalog_changed();
                        ControlResponse::Done {
                            message: format!(
                                "{server}: {} definition(s) approved and pinned",
                                approved.pinned
                            ),
                        }
                    }
                    Err(e) => e.reply(),
                }
            }
        },
        ControlRequest::ToolsCheck { server } => {
            if let Some(server) = &server
                && let Err(e) = known(daemon, server)
            {
                return Ok(e.reply());
            }
            let views = daemon.catalog_views();
            ControlResponse::ToolsCheck(super::check(
                &views,
                &|server, name| daemon.namespaced(server, name),
                server.as_deref(),
            ))
        }
        ControlRequest::Stats => {
            let observer = daemon.observer();
            ControlResponse::Stats(observer.stats.report(observer.audit.dropped()))
        }
        other => return Err(other),
    };
    Ok(response)
}

fn known(daemon: &dyn Host, server: &str) -> Result<(), ControlError> {
    let config = daemon.config();
    if config.servers.contains_key(server) {
        return Ok(());
    }
    let names: Vec<&str> = config.servers.keys().map(String::as_str).collect();
    Err(ControlError::UnknownServer {
        server: server.to_owned(),
        known: if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
    })
}
