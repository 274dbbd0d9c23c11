//! Checking that a socket really leads to our own daemon before a byte is sent to it.
//!
//! Another user can create `/tmp/mcpd-<victim uid>` before the victim does, or point a symlink
//! somewhere, and listen there: the victim's hello (pid, working directory), `initialize` and
//! tool arguments would go to them and their answers to the victim's client. So `mcp-shim`,
//! `mcpctl` and the shim's autostart all connect through [`connect`], which
//!
//! 1. `lstat`s the socket's directory: it must be a real directory (not a symlink) owned by us
//!    and not writable by group or others ([`check_private_dir`]);
//! 2. connects, then asks the kernel who listens (`SO_PEERCRED`, `getpeereid` elsewhere): the
//!    daemon's uid must be ours ([`peer_uid`]).
//!
//! Only then is anything written. A refusal is one line naming the path and its owner.

use std::ffi::CStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a socket or directory is not trusted: one line naming the path and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted(String);

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untrusted {}

/// Why [`connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The directory or the connect failed at the OS level (`ENOENT`, `ECONNREFUSED`, ...):
    /// nothing answered, or the path cannot be reached.
    Io(io::Error),
    /// Something answered, or could have, that is not ours: nothing was sent.
    Untrusted(Untrusted),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => e.fmt(f),
            Self::Untrusted(u) => u.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The effective uid of this process: the uid a daemon must run as to be ours.
pub fn our_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `uid 1001 (mallory)`, or `uid 1001` when the name is unknown.
pub fn describe_uid(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid value to be overwritten by getpwuid_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `pwd` and `result` are writable locals and
    // `buf` is a writable buffer of the length passed.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` points to a NUL-terminated string inside `buf`, alive here.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Checks that `dir` is a real directory (not a symlink: `lstat`), owned by `uid` and not
/// writable by group or others. A missing directory is an `Err(Io(NotFound))`.
pub fn check_private_dir(dir: &Path, uid: u32) -> Result<(), ConnectError> {
    let meta = fs::symlink_metadata(dir).map_err(ConnectError::Io)?;
    let refuse = |why: String| {
        Err(ConnectError::Untrusted(Untrusted(format!(
            "refusing {}: {why}",
            dir.display()
        ))))
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(dir).map_or_else(|_| "?".into(), |t| t.display().to_string());
        return refuse(format!(
            "it is a symbolic link (to {target}) owned by {}; the daemon's directory must be a \
             real directory of yours",
            describe_uid(meta.uid())
        ));
    }
    if !meta.file_type().is_dir() {
        return refuse(format!(
            "it is not a directory (owner {})",
            describe_uid(meta.uid())
        ));
    }
    if meta.uid() != uid {
        return refuse(format!(
            "it belongs to {}, not to you ({}); another user may be posing as your mcpd",
            describe_uid(meta.uid()),
            describe_uid(uid)
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "it is writable by group or others (mode {:04o}, owner {}); `chmod 700` it",
            meta.mode() & 0o7777,
            describe_uid(meta.uid())
        ));
    }
    Ok(())
}

/// The uid of the process at the other end of a connected Unix socket, from the kernel.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
            .map_err(io::Error::other)?;
        // SAFETY: the descriptor is a valid socket owned by `stream`; `cred` and `len` are
        // writable and `len` holds the size of `cred`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::addr_of_mut!(cred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let mut uid: libc::uid_t = 0;
        let mut gid: libc::gid_t = 0;
        // SAFETY: the descriptor is a valid socket owned by `stream`; both out-pointers are
        // writable locals.
        if unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// Checks that the process listening at the other end of `stream` runs as `uid`.
pub fn check_peer(stream: &UnixStream, socket: &Path, uid: u32) -> Result<(), ConnectError> {
    let peer = peer_uid(stream).map_err(ConnectError::Io)?;
    if peer == uid {
        return Ok(());
    }
    Err(ConnectError::Untrusted(Untrusted(format!(
        "refusing the daemon at {}: it runs as {}, not as you ({}); another user may be posing \
         as your mcpd",
        socket.display(),
        describe_uid(peer),
        describe_uid(uid)
    ))))
}

/// The directory a socket path lives in (`.` for a bare file name).
pub fn socket_dir(socket: &Path) -> PathBuf {
    match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Connects to our daemon at `socket`: checks its directory, connects, checks the peer's uid.
/// Nothing is written on the connection; it is returned only when every check passed.
pub fn connect(socket: &Path) -> Result<UnixStream, ConnectError> {
    let uid = our_uid();
    check_private_dir(&socket_dir(socket), uid)?;
    let stream = UnixStream::connect(socket).map_err(ConnectError::Io)?;
    check_peer(&stream, socket, uid)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::os::unix::net::UnixListener;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mcpd-trust-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn refusal(r: Result<(), ConnectError>) -> String {
        match r {
            Err(ConnectError::Untrusted(u)) => u.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_private_directory_of_ours_passes() {
        let dir = tmp("ok");
        check_private_dir(&dir, our_uid()).unwrap();
        // Group/world readable is fine (systemd makes some 0755); writable is not.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        check_private_dir(&dir, our_uid()).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlinks_foreign_owners_and_shared_modes_are_refused_naming_path_and_owner() {
        let dir = tmp("bad");
        let me = our_uid();
        let other = me.wrapping_add(4242);
        let msg = refusal(check_private_dir(&dir, other));
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("uid {me}")), "{msg}");

        let link = dir.with_extension("link");
        let _ = fs::remove_file(&link);
        symlink(&dir, &link).unwrap();
        let msg = refusal(check_private_dir(&link, me));
        assert!(msg.contains("symbolic link"), "{msg}");
        fs::remove_file(&link).unwrap();

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let msg = refusal(check_private_dir(&dir, me));
        assert!(msg.contains("writable by group or others"), "{msg}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

        match check_private_dir(&dir.join("missing"), me) {
            Err(ConnectError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_peer_uid_comes_from_the_kernel() {
        let dir = tmp("peer");
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stream = connect(&path).unwrap();
        assert_eq!(peer_uid(&stream).unwrap(), our_uid());
        let msg = refusal(check_peer(&stream, &path, our_uid().wrapping_add(1)));
        assert!(msg.contains("refusing the daemon at"), "{msg}");
        drop(listener);
        fs::remove_dir_all(&dir).unwrap();
    }
}
