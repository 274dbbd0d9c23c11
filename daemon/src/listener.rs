//! The daemon's socket: directory 0700, socket 0600, a stale socket probed before it is replaced;
//! or the socket systemd passed (socket activation), which is adopted as it is.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, bail};
use tokio::net::UnixListener;

/// Takes the listening socket a service manager passed (`LISTEN_FDS`/`LISTEN_PID`, fd 3), if any.
///
/// Call it before any thread is started: it removes `LISTEN_FDS` and `LISTEN_PID` from the
/// environment (so that nothing started later believes the socket is its own) and marks the
/// descriptor close-on-exec. The socket file belongs to the service manager: the daemon never
/// unlinks or replaces it, and it stays in place across restarts so connections queue meanwhile.
pub fn inherited() -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 1 {
        tracing::warn!(
            "the service manager passed {} sockets; using the first",
            fds.len()
        );
    }
    let listener = fds.take_unix_listener(0).context(
        "the socket passed by the service manager (fd 3) is not a listening Unix stream socket",
    )?;
    if let Some(listener) = &listener {
        listener
            .set_nonblocking(true)
            .context("cannot make the inherited socket non-blocking")?;
    }
    Ok(listener)
}

/// The path an inherited listener is bound to, for log lines and status.
pub fn local_path(listener: &std::os::unix::net::UnixListener) -> Option<std::path::PathBuf> {
    listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().map(Path::to_path_buf))
}

/// Binds the socket at `path`, creating its directory with mode 0700.
///
/// A socket file that already exists is probed first: if a daemon answers, this fails (two
/// daemons would fight over the same servers); if nobody answers it is stale and replaced.
/// A file there that is not a socket is never removed.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path.parent().context("the socket path has no directory")?;
    prepare_dir(dir)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => bail!(
                "another mcpd is already listening on {} (stop it, or use --socket)",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!("removing the stale socket {}", path.display());
                fs::remove_file(path).with_context(|| {
                    format!("cannot remove the stale socket {}", path.display())
                })?;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot probe the existing socket {}", path.display())
                });
            }
        },
        Ok(_) => bail!(
            "{} exists and is not a socket; move it away",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod 600 {}", path.display()))?;
    std_listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(std_listener)?)
}

/// Creates `dir` with mode 0700 or checks that an existing one is ours and private.
///
/// The directory is looked at with `lstat` and opened with `O_NOFOLLOW`: a symlink planted
/// there (e.g. `/tmp/mcpd-$UID` pointing at another directory) is refused, never followed, and
/// the mode of a link's target is never changed. One of ours that others may read is made 0700.
pub(crate) fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the runtime directory {}", dir.display()))?;
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir);
    let handle = match handle {
        Ok(handle) => handle,
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            let owner = fs::symlink_metadata(dir).map_or_else(
                |_| "?".to_owned(),
                |m| mcpd_proto::trust::describe_uid(m.uid()),
            );
            bail!(
                "refusing the runtime directory {}: it is a symbolic link or not a directory \
                 (owner {owner}); remove it, or set XDG_RUNTIME_DIR or --socket",
                dir.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", dir.display())),
    };
    let meta = handle
        .metadata()
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        bail!(
            "refusing the runtime directory {}: it belongs to {}, not to us ({}); remove it, or \
             set XDG_RUNTIME_DIR or --socket",
            dir.display(),
            mcpd_proto::trust::describe_uid(meta.uid()),
            mcpd_proto::trust::describe_uid(uid)
        );
    }
    if meta.mode() & 0o1000 != 0 {
        // A sticky directory is shared by design (`/tmp`, `/var/tmp`, `/dev/shm`): making it
        // 0700 would lock every other user out of it, which is never ours to decide (a daemon
        // run as root with `--socket /tmp/x.sock` would otherwise do exactly that).
        bail!(
            "refusing the runtime directory {}: it is a shared directory (sticky bit set, mode \
             {:o}); put the socket in a directory of its own, e.g. {}",
            dir.display(),
            meta.mode() & 0o7777,
            dir.join(format!("mcpd-{uid}")).join("mcpd.sock").display()
        );
    }
    if meta.mode() & 0o077 != 0 {
        // fchmod on the descriptor opened without following links: never a link's target.
        handle
            .set_permissions(fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod 700 {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn modes_are_private_and_a_stale_socket_is_replaced() {
        let tmp = tempfile::Builder::new()
            .prefix("l")
            .tempdir_in("/tmp")
            .unwrap();
        let path = tmp.path().join("run").join("mcpd.sock");
        let first = bind(&path).unwrap();
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // A live socket is not taken over.
        assert!(
            bind(&path)
                .unwrap_err()
                .to_string()
                .contains("already listening")
        );
        drop(first);
        // The file is left behind by the dropped listener: it is stale now.
        let _second = bind(&path).unwrap();
    }

    #[test]
    fn a_shared_sticky_directory_is_refused_and_never_chmod_ed() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = prepare_dir(&shared).unwrap_err().to_string();
        assert!(err.contains("shared directory"), "{err}");
        let mode = fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "the shared directory's mode was changed");
    }

    #[test]
    fn a_symlinked_runtime_directory_is_refused_and_its_target_left_alone() {
        let tmp = tempfile::Builder::new()
            .prefix("l")
            .tempdir_in("/tmp")
            .unwrap();
        let target = tmp.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("run");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = prepare_dir(&link).unwrap_err().to_string();
        assert!(
            err.contains("symbolic link") && err.contains(&link.display().to_string()),
            "{err}"
        );
        assert_eq!(
            fs::metadata(&target).unwrap().mode() & 0o777,
            0o755,
            "the target was chmod-ed"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { bind(&link.join("mcpd.sock")).unwrap_err() });
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!target.join("mcpd.sock").exists());
    }

    #[test]
    fn a_regular_file_is_never_removed() {
        let tmp = tempfile::Builder::new()
            .prefix("l")
            .tempdir_in("/tmp")
            .unwrap();
        let path = tmp.path().join("mcpd.sock");
        fs::write(&path, "keep me").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { bind(&path).unwrap_err() });
        assert!(err.to_string().contains("not a socket"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
    }
}
