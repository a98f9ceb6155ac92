//! Which Redis System 1 uses: the one `REDIS_URL` names, else a private `redis-server` (data in
//! the lab's temporary folder, with an append-only file so that a restarted Redis keeps its
//! stream), else none, and the lab goes on with System 2 alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::child::Spec;
use super::config::RedisFsync;

/// What to say when no Redis can be had.
pub const INSTALL_REDIS: &str = "System 1 needs Redis, and no redis-server is installed (none on PATH) \
and REDIS_URL is not set. Install it (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: \
`brew install redis`) or set REDIS_URL. Going on with System 2 alone.";

/// `redis-server` on `PATH`, if installed.
pub fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A private redis-server on `port` of 127.0.0.1, its data in `dir`. It runs under `lab child
/// guard`, which stops it if the supervisor is killed and cannot.
pub fn private(program: PathBuf, port: u16, dir: &Path) -> anyhow::Result<Spec> {
    private_with_fsync(program, port, dir, RedisFsync::Everysec)
}

/// [`private`], with the AOF set as `fsync` says (`lab up --redis-fsync`).
pub fn private_with_fsync(
    program: PathBuf,
    port: u16,
    dir: &Path,
    fsync: RedisFsync,
) -> anyhow::Result<Spec> {
    let (appendonly, appendfsync) = match fsync {
        RedisFsync::Always => ("yes", "always"),
        RedisFsync::Everysec => ("yes", "everysec"),
        RedisFsync::Off => ("no", "everysec"),
    };
    let mut args: Vec<OsString> = vec![program.into_os_string()];
    args.extend(
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.display().to_string(),
            "--save",
            "",
            "--appendonly",
            appendonly,
            "--appendfsync",
            appendfsync,
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
        ]
        .into_iter()
        .map(OsString::from),
    );
    Spec::lab("redis", "guard", args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(fsync: RedisFsync) -> Vec<String> {
        let spec = private_with_fsync("redis-server".into(), 7000, Path::new("/tmp"), fsync).unwrap();
        spec.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn fsync_sets_the_aof_and_its_policy() {
        let always = args(RedisFsync::Always).join(" ");
        assert!(
            always.contains("--appendonly yes --appendfsync always"),
            "{always}"
        );
        let off = args(RedisFsync::Off).join(" ");
        assert!(off.contains("--appendonly no"), "{off}");
    }
}
