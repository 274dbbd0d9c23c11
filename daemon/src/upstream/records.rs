//! Child records (`<runtime dir>/children/<pid>.json`) are trusted only from a directory of
//! ours: another user who creates `/tmp/mcpd-$UID` first, or plants a record, must not get mcpd
//! to kill one of the user's own process groups. See `docs/SECURITY.md`.

use std::path::Path;

use crate::upstream::process::{RecordFile, proc_start_time};

/// Why the records directory (or the runtime directory above it) cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{source:#}")]
pub struct RecordsDirError {
    /// What `listener::prepare_dir` said (which directory, what is wrong with it).
    #[source]
    pub source: anyhow::Error,
}

/// Creates the records directory (and the runtime directory above it) 0700, or checks that
/// they are ours: real directories (never a symlink followed), owned by us, private.
pub fn prepare_records_dir(dir: &Path) -> Result<(), RecordsDirError> {
    if let Some(runtime) = dir.parent() {
        crate::listener::prepare_dir(runtime).map_err(|source| RecordsDirError { source })?;
    }
    crate::listener::prepare_dir(dir).map_err(|source| RecordsDirError { source })
}

/// Whether the records in `dir` may be believed: `dir` and the runtime directory above it are
/// real directories owned by us that nobody else can write to. A missing directory has no
/// records; an untrusted one is logged and ignored, never read.
pub(crate) fn records_trusted(dir: &Path) -> bool {
    use mcpd_proto::trust::{ConnectError, check_private_dir, our_uid};
    for d in dir.parent().into_iter().chain(std::iter::once(dir)) {
        match check_private_dir(d, our_uid()) {
            Ok(()) => {}
            Err(ConnectError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(ConnectError::Io(e)) => {
                tracing::warn!(
                    "not reading child records: cannot inspect {}: {e}",
                    d.display()
                );
                return false;
            }
            Err(ConnectError::Untrusted(why)) => {
                tracing::warn!("not reading child records: {why}");
                return false;
            }
        }
    }
    true
}

/// Reads one record: a regular file (not a symlink) owned by us, else `None` (logged).
pub(crate) fn read_record(path: &Path) -> Option<RecordFile> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let me = mcpd_proto::trust::our_uid();
    if !meta.file_type().is_file() || meta.uid() != me {
        tracing::warn!(
            "ignoring the child record {}: not a regular file of ours (owner {})",
            path.display(),
            mcpd_proto::trust::describe_uid(meta.uid())
        );
        return None;
    }
    let mut bytes = Vec::new();
    file.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether the group `record` names is what a previous daemon of ours left: its leader still
/// runs with the recorded start time, or (the leader died, e.g. by `PR_SET_PDEATHSIG`) every
/// remaining member started no earlier than the recorded leader did and runs as us. A pid that
/// was reused since, or a group that existed before the recorded leader, is not ours.
pub(crate) fn group_is_ours(record: &RecordFile) -> bool {
    if let Some(start) = proc_start_time(record.pid) {
        return start == record.start_time;
    }
    let members = group_members(record.pid);
    !members.is_empty()
        && members
            .iter()
            .all(|&(start, uid)| start >= record.start_time && uid == mcpd_proto::trust::our_uid())
}

/// The start time and uid of each live process in process group `pgid`.
fn group_members(pgid: i32) -> Vec<(u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // Field 5 is the process group, field 22 the start time (fields resume at 3).
            (fields.get(2)?.parse::<i32>().ok()? == pgid).then_some(())?;
            let start = fields.get(19)?.parse().ok()?;
            let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
            Some((start, uid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record_json(pid: u32) -> String {
        format!(r#"{{"server":"x","pid":{pid},"start_time":1,"daemon_pid":999999}}"#)
    }

    #[test]
    fn only_regular_files_of_ours_are_read_as_records() {
        let dir = tempfile::Builder::new()
            .prefix("r")
            .tempdir_in("/tmp")
            .unwrap();
        let ours = dir.path().join("1.json");
        std::fs::write(&ours, record_json(1)).unwrap();
        assert!(read_record(&ours).is_some());

        let link = dir.path().join("2.json");
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        assert!(read_record(&link).is_none(), "a symlink was followed");

        let foreign = dir.path().join("3.json");
        std::fs::write(&foreign, record_json(3)).unwrap();
        // The suite runs as root (see tests/tests/trust.rs); elsewhere the chown fails and
        // this part proves nothing, so it must not pass silently either.
        std::os::unix::fs::chown(&foreign, Some(mcpd_proto::trust::our_uid() + 1), None)
            .expect("chown needs root, as the suite runs");
        assert!(
            read_record(&foreign).is_none(),
            "another user's record was read"
        );
    }

    #[test]
    fn a_records_directory_others_can_write_to_is_not_trusted() {
        let dir = tempfile::Builder::new()
            .prefix("r")
            .tempdir_in("/tmp")
            .unwrap();
        let children = dir.path().join("children");
        prepare_records_dir(&children).unwrap();
        assert!(records_trusted(&children));
        std::fs::set_permissions(&children, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!records_trusted(&children));
        assert!(!records_trusted(&dir.path().join("missing")));
    }

    #[test]
    fn a_live_leader_with_another_start_time_is_not_ours() {
        let me = std::process::id() as i32;
        let start = proc_start_time(me).unwrap();
        let record = |start_time| RecordFile {
            server: "x".into(),
            pid: me,
            start_time,
            daemon_pid: 1,
            mark: None,
        };
        assert!(group_is_ours(&record(start)));
        assert!(!group_is_ours(&record(start + 1)));
    }

    #[test]
    fn child_records_old_and_new_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mark) in [
            ("child-record.json", Some("4000-7")),
            ("child-record-no-mark.json", None),
        ] {
            let path = dir.path().join(name);
            std::fs::copy(crate::router::cache::tests::fixture(name), &path).unwrap();
            let record = read_record(&path).expect("the record is read");
            assert_eq!(
                (
                    record.server.as_str(),
                    record.pid,
                    record.start_time,
                    record.daemon_pid
                ),
                ("fx", 4242, 123456, 4000),
                "{name}"
            );
            assert_eq!(record.mark.as_deref(), mark, "{name}");
        }
    }
}
