//! Landlock sandbox for stdio servers (see docs/SECURITY.md, "Servers' sandbox").
//!
//! The ruleset is built in the daemon before the fork ([`prepare`]): paths are opened, rules
//! added, the ruleset fd created. Between fork and exec the child only calls
//! `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self` ([`Prepared::apply_in_child`]).
//!
//! Policies:
//! - `protect` (default): everything the user can reach, except a protected set (mcpd's own
//!   config, state and cache directories, key and token directories, browser profiles, MCP
//!   clients' secret-holding config files). Landlock can only allow, so the allow-list is
//!   built from the top: each entry of `/` gets full access, except that a directory holding a
//!   protected path is descended into instead, and the protected entry itself gets nothing.
//!   Consequences (documented in SECURITY.md): new entries created later directly in such a
//!   directory (the top of `$HOME`, `~/.config`, ...) are out of reach for a running server,
//!   and such a directory cannot be listed.
//! - `strict`: system directories, the command's install tree and the runtimes' caches
//!   readable, a private temp directory writable, plus what `read`/`write` list.
//! - `network`: Landlock TCP rules (connect and bind) when ports are restricted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, path_beneath_rules,
};

use crate::config::StdioSpec;
use crate::config::contain::{Network, SandboxMode, SandboxSpec};

/// The Landlock ABI whose rights mcpd asks for (filesystem incl. ioctl on devices, TCP).
/// Older kernels get the rights they know (best effort), and `status` says which ABI is in force.
const TARGET_ABI: ABI = ABI::V5;

/// The Landlock ABI of the running kernel: 0 without Landlock.
pub fn kernel_abi() -> i32 {
    static ABI_VERSION: OnceLock<i32> = OnceLock::new();
    *ABI_VERSION.get_or_init(|| {
        // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only
        // returns the ABI version (or -1); it reads no memory.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                1u32,
            )
        };
        i32::try_from(v).unwrap_or(0).max(0)
    })
}

/// What a server's child gets: a ruleset to enforce (none when off or unsupported), the
/// environment changes that go with it, and how `status` describes it.
#[derive(Debug)]
pub struct Prepared {
    ruleset: Option<RulesetCreated>,
    /// A private `TMPDIR` (the shared one is out of reach or strict mode).
    pub tmpdir: Option<PathBuf>,
    /// For `mcpctl status`: `landlock ABI 7, protect (9 paths protected)`, `off (...)`.
    pub description: String,
}

impl Prepared {
    /// No sandbox, with the reason `status` shows.
    fn none(description: String) -> Self {
        Self {
            ruleset: None,
            tmpdir: None,
            description,
        }
    }

    /// What the child enforces; `self` keeps the description.
    pub fn take_for_child(&mut self) -> InChild {
        InChild {
            ruleset: self.ruleset.take(),
        }
    }
}

/// The part of [`Prepared`] that moves into the `pre_exec` closure.
#[derive(Debug)]
pub struct InChild {
    ruleset: Option<RulesetCreated>,
}

impl InChild {
    /// Runs in the child between fork and exec: `no_new_privs` (always), then the ruleset.
    ///
    /// Async-signal-safe: `prctl` and `RulesetCreated::restrict_self`, which (landlock 0.4.8,
    /// `ruleset.rs`) calls `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self(2)`, builds
    /// its status and error values without allocating (`io::Error::last_os_error` holds the
    /// errno inline), and drops the ruleset, which closes its fd. Nothing here allocates,
    /// locks or touches the daemon's other state.
    pub fn apply_in_child(&mut self) -> std::io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(ruleset) = self.ruleset.take()
            && ruleset.restrict_self().is_err()
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The directories and files no server reaches under `protect` (those that exist).
pub fn protected_paths(home: Option<&Path>) -> Vec<PathBuf> {
    let paths = mcpd_proto::paths::Paths::from_env();
    let mut out = vec![];
    if let Some(config_dir) = paths.config_file.parent() {
        out.push(config_dir.to_owned());
    }
    out.push(paths.state_dir);
    out.push(paths.cache_dir);
    // Other servers' private temp directories (a server's own is granted on its own).
    out.push(paths.runtime_dir.join("tmp"));
    if let Some(home) = home {
        for rel in PROTECTED_IN_HOME {
            out.push(home.join(rel));
        }
    }
    out
}

/// Relative to `$HOME`: keys, tokens, browser profiles, MCP clients' configs with secrets.
pub const PROTECTED_IN_HOME: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker/config.json",
    ".netrc",
    ".git-credentials",
    ".password-store",
    ".local/share/keyrings",
    ".mcp-auth",
    // Browser profiles.
    ".mozilla",
    ".librewolf",
    ".config/google-chrome",
    ".config/google-chrome-beta",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".config/vivaldi",
    ".config/opera",
    "snap/firefox",
    "snap/chromium",
    ".var/app/org.mozilla.firefox",
    ".var/app/com.google.Chrome",
    ".var/app/org.chromium.Chromium",
    // MCP clients' configuration and credential files.
    ".claude.json",
    ".claude/.credentials.json",
    ".config/Claude",
    ".cursor/mcp.json",
    ".codeium/windsurf/mcp_config.json",
    ".config/Code/User/mcp.json",
    ".config/Code/User/settings.json",
    ".codex/auth.json",
    ".codex/config.toml",
    ".gemini/settings.json",
];

/// Builds the sandbox of one server before it is spawned. `private_tmp` is a directory mcpd
/// owns for this server (created when needed).
pub fn prepare(
    server: &str,
    stdio: &StdioSpec,
    spec: &SandboxSpec,
    private_tmp: Option<&Path>,
) -> Prepared {
    if spec.mode == SandboxMode::Off {
        tracing::warn!(
            server,
            "runs without a sandbox (\"sandbox\": false in its definition)"
        );
        return Prepared::none("off (\"sandbox\": false)".to_owned());
    }
    let abi = kernel_abi();
    if abi == 0 {
        return Prepared::none("none: this kernel has no Landlock; runs unsandboxed".to_owned());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    // Package runners' caches must exist before the ruleset is built: a directory created
    // later directly in $HOME is out of reach (see the module doc).
    if let Some(home) = &home
        && home.is_dir()
    {
        for cache in [".npm", ".cache"] {
            let dir = home.join(cache);
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
            }
        }
    }
    match build(stdio, spec, home.as_deref(), private_tmp, abi) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(server, "cannot build its sandbox, runs unsandboxed: {e}");
            Prepared::none(format!(
                "none: cannot build the sandbox ({e}); runs unsandboxed"
            ))
        }
    }
}

/// Why a server's sandbox could not be built (it then runs unsandboxed, and says so).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The server's private temp directory could not be created.
    #[error("cannot create {dir}: {source}")]
    Tmpdir {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Landlock refused the ruleset or one of its rules.
    #[error("{0}")]
    Landlock(#[from] landlock::RulesetError),
}

fn build(
    stdio: &StdioSpec,
    spec: &SandboxSpec,
    home: Option<&Path>,
    private_tmp: Option<&Path>,
    abi: i32,
) -> Result<Prepared, SandboxError> {
    let all = AccessFs::from_all(TARGET_ABI);
    let read = AccessFs::from_read(TARGET_ABI);
    let mut full: Vec<PathBuf> = Vec::new();
    let mut read_only: Vec<PathBuf> = Vec::new();
    let mut tmpdir = None;
    let what;
    match spec.mode {
        SandboxMode::Protect | SandboxMode::Off => {
            let protected = protect_set(home, &spec.allow);
            let descend = ancestors_of(&protected);
            grant_below(Path::new("/"), &protected, &descend, &mut full);
            // The shared temp directory holds a protected path (tests do that): give the
            // server a private one.
            let shared_tmp = std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            if descend.contains(&shared_tmp) || protected.contains(&shared_tmp) {
                tmpdir = private_tmp.map(Path::to_owned);
            }
            full.extend(spec.allow.iter().cloned());
            what = format!("protect ({} paths protected)", protected.len());
        }
        SandboxMode::Strict => {
            read_only.extend(strict_reads(stdio, home));
            tmpdir = private_tmp.map(Path::to_owned);
            full.extend(spec.allow.iter().cloned());
            for dev in [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/tty",
                "/dev/shm",
            ] {
                full.push(PathBuf::from(dev));
            }
            what = format!(
                "strict ({} readable, {} writable)",
                spec.read.len(),
                spec.write.len()
            );
        }
    }
    read_only.extend(spec.read.iter().cloned());
    full.extend(spec.write.iter().cloned());
    if let Some(t) = &tmpdir {
        std::fs::create_dir_all(t).map_err(|source| SandboxError::Tmpdir {
            dir: t.display().to_string(),
            source,
        })?;
        full.push(t.clone());
    }

    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(SandboxError::Landlock)?;
    let mut net = String::new();
    if spec.network != Network::Any {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(TARGET_ABI))
            .map_err(SandboxError::Landlock)?;
        net = match &spec.network {
            Network::Ports(ports) => format!(
                "; TCP only to ports {}",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "; no TCP".to_owned(),
        };
        if abi < 4 {
            net.push_str(&format!(
                " NOT enforced (Landlock ABI {abi} has no network rules)"
            ));
        }
    }
    let mut created = ruleset.create().map_err(SandboxError::Landlock)?;
    created = created
        .add_rules(path_beneath_rules(&full, all))
        .map_err(SandboxError::Landlock)?
        .add_rules(path_beneath_rules(&read_only, read))
        .map_err(SandboxError::Landlock)?;
    if let Network::Ports(ports) = &spec.network {
        for port in ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::from_all(TARGET_ABI)))
                .map_err(SandboxError::Landlock)?;
        }
    }
    Ok(Prepared {
        ruleset: Some(created),
        tmpdir,
        description: format!("landlock ABI {abi}, {what}{net}"),
    })
}

/// The protected paths that exist (with symlinks also resolved), minus what `allow` hands back.
fn protect_set(home: Option<&Path>, allow: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    // Paths that do not exist yet are protected too: their parent is descended into, so that
    // one created later is out of reach.
    for p in protected_paths(home) {
        if allow.iter().any(|a| p.starts_with(a)) {
            continue;
        }
        if let Ok(canonical) = std::fs::canonicalize(&p) {
            out.insert(canonical);
        }
        out.insert(p);
    }
    out
}

/// Every ancestor of every protected path (those are descended into, never granted whole).
fn ancestors_of(protected: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    protected
        .iter()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_owned))
        .collect()
}

/// Adds to `out` each entry of `dir` that holds no protected path; descends into those that do.
fn grant_below(
    dir: &Path,
    protected: &BTreeSet<PathBuf>,
    descend: &BTreeSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if protected.contains(&path) {
            continue;
        }
        if descend.contains(&path) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                grant_below(&path, protected, descend, out);
            }
            continue;
        }
        // A symlink (or a path through one) that leads to or above a protected path.
        if let Ok(target) = std::fs::canonicalize(&path)
            && target != path
            && (protected.iter().any(|p| target.starts_with(p)) || descend.contains(&target))
        {
            continue;
        }
        out.push(path);
    }
}

/// What a strict server may read without asking: the system, its command's install tree and
/// the runtimes' caches.
fn strict_reads(stdio: &StdioSpec, home: Option<&Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [
        "/usr",
        "/lib",
        "/lib32",
        "/lib64",
        "/bin",
        "/sbin",
        "/etc",
        "/opt",
        "/nix/store",
        "/proc",
        "/sys",
        "/dev/urandom",
        "/dev/random",
        "/run/systemd/resolve",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Some(home) = home {
        for rel in [
            ".npm",
            ".cache/uv",
            ".cache/pip",
            ".cache/node",
            ".local/share/uv",
            ".local/lib",
            ".local/bin",
            ".nvm",
            ".volta",
            ".bun",
            ".deno",
            ".cargo/bin",
            ".pyenv",
        ] {
            out.push(home.join(rel));
        }
    }
    let too_broad = |p: &Path| p == Path::new("/") || Some(p) == home;
    let mut tree_of = |file: &Path| {
        for f in [
            file.to_owned(),
            std::fs::canonicalize(file).unwrap_or_default(),
        ] {
            if let Some(root) = install_root(&f)
                && !too_broad(&root)
            {
                out.push(root);
            } else {
                out.push(f);
            }
        }
    };
    if let Some(cmd) = resolve_command(&stdio.command, stdio.env.get("PATH")) {
        tree_of(&cmd);
    }
    for arg in &stdio.args {
        let p = Path::new(arg);
        if p.is_absolute() && p.exists() {
            tree_of(p);
        }
    }
    if let Some(cwd) = &stdio.cwd {
        out.push(cwd.clone());
    }
    out
}

/// The tree a program or script belongs to: the directory holding its top `node_modules`, else
/// the nearest package root (`package.json`, `pyproject.toml`), else (for `.../bin/x`) the
/// directory above `bin`, else its own directory.
fn install_root(file: &Path) -> Option<PathBuf> {
    let ancestors: Vec<&Path> = file.ancestors().skip(1).collect();
    if let Some(nm) = ancestors
        .iter()
        .rev()
        .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
    {
        return nm.parent().map(Path::to_owned);
    }
    if let Some(root) = ancestors
        .iter()
        .take(4)
        .find(|a| a.join("package.json").exists() || a.join("pyproject.toml").exists())
    {
        return Some(root.to_path_buf());
    }
    let dir = file.parent()?;
    if dir.file_name().is_some_and(|n| n == "bin") {
        return dir.parent().map(Path::to_owned);
    }
    Some(dir.to_owned())
}

/// `command` as `execvp` would find it.
fn resolve_command(command: &str, path: Option<&String>) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command));
    }
    let path = path
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(command))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_holding_a_protected_path_is_descended_and_the_path_left_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path();
        for d in [".ssh", ".config/gcloud", ".config/other", "work"] {
            std::fs::create_dir_all(home.join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink(home.join(".ssh"), home.join("keys")).expect("symlink");
        let protected: BTreeSet<PathBuf> = [home.join(".ssh"), home.join(".config/gcloud")]
            .into_iter()
            .collect();
        let descend = ancestors_of(&protected);
        let mut out = Vec::new();
        grant_below(home, &protected, &descend, &mut out);
        out.sort();
        assert_eq!(out, vec![home.join(".config/other"), home.join("work")]);
    }

    #[test]
    fn install_roots() {
        assert_eq!(
            install_root(Path::new("/x/app/node_modules/pkg/dist/index.js")),
            Some(PathBuf::from("/x/app"))
        );
        assert_eq!(
            install_root(Path::new("/nonexistent-mcpd/venv/bin/python")),
            Some(PathBuf::from("/nonexistent-mcpd/venv"))
        );
    }
}
