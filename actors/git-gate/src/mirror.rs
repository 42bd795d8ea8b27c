//! One bare mirror per declared repository, refreshed from upstream before it serves.
//!
//! Hazard: a mirror that serves what it had when upstream is unreachable hands the
//! agent stale data as if it were current (reference G1). Every advertisement (the
//! first request of every clone, fetch and push) first fetches from upstream within a
//! budget; a failed or timed-out fetch fails the request with the reason. Only
//! `refs/heads/*` and `refs/tags/*` are mirrored (with pruning), so the agent sees what a
//! clone of upstream would. Fetches and ref updates of one mirror are serialized by
//! `refs_lock`; pushes by `push_lock`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::GitGateError;
use crate::process::{Git, check};
use crate::upstream::Upstream;

/// A mirror and its upstream.
#[derive(Debug)]
pub struct Mirror {
    /// The repository name.
    pub name: String,
    /// `<root>/<name>.git`.
    pub dir: PathBuf,
    /// Where it comes from.
    pub upstream: Upstream,
    /// Budget of an upstream fetch or push.
    pub upstream_timeout: Duration,
    /// Serializes fetches and ref updates.
    pub refs_lock: Mutex<()>,
    /// Serializes pushes (reference: concurrent pushes to one repository).
    pub push_lock: Mutex<()>,
}

impl Mirror {
    /// The mirror's object directory.
    pub fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }

    /// Creates the bare repository if it does not exist yet.
    pub async fn ensure(&self, git: &Git) -> Result<(), GitGateError> {
        if self.dir.join("HEAD").is_file() {
            return Ok(());
        }
        let out = git
            .command(
                "init",
                ["init", "--bare", "--quiet"]
                    .into_iter()
                    .map(String::from)
                    .chain([self.dir.display().to_string()]),
            )
            .timeout(Duration::from_secs(30))
            .output(None, 64 * 1024)
            .await?;
        check("init", out)?;
        Ok(())
    }

    /// Whether the mirror is a real directory (not a symlink someone swapped in).
    pub fn is_sound(&self) -> bool {
        std::fs::symlink_metadata(&self.dir).is_ok_and(|m| m.is_dir())
            && std::fs::symlink_metadata(self.objects()).is_ok_and(|m| m.is_dir())
    }

    /// `git --git-dir=<mirror>` plus `args`, with the upstream's config and env.
    pub fn upstream_command(
        &self,
        git: &Git,
        step: &'static str,
        args: Vec<String>,
    ) -> crate::process::Invocation {
        let mut argv = vec![format!("--git-dir={}", self.dir.display())];
        argv.extend(args);
        let mut inv = git
            .command(step, argv)
            .configs(self.upstream.config())
            .config("gc.auto", "0")
            .config("maintenance.auto", "false")
            .timeout(self.upstream_timeout);
        for (k, v) in self.upstream.env() {
            inv = inv.env(k, v);
        }
        inv
    }

    /// Fetches heads and tags from upstream (pruning), and points `HEAD` where
    /// upstream's does when it dangles. Fails closed.
    pub async fn refresh(&self, git: &Git) -> Result<(), GitGateError> {
        let _refs = self.refs_lock.lock().await;
        let url = self.upstream.url.render();
        let args = vec![
            "fetch".into(),
            "--prune".into(),
            "--no-tags".into(),
            "--no-write-fetch-head".into(),
            "--quiet".into(),
            url.clone(),
            "+refs/heads/*:refs/heads/*".into(),
            "+refs/tags/*:refs/tags/*".into(),
        ];
        let out = self.upstream_command(git, "fetch", args).output(None, 1024 * 1024).await?;
        check("fetch", out)?;
        let verify = git
            .command(
                "rev-parse",
                [
                    format!("--git-dir={}", self.dir.display()),
                    "rev-parse".into(),
                    "--verify".into(),
                    "--quiet".into(),
                    "HEAD".into(),
                ],
            )
            .timeout(Duration::from_secs(30))
            .output(None, 4096)
            .await?;
        if verify.status.success() {
            return Ok(());
        }
        let args = vec!["ls-remote".into(), "--symref".into(), url, "HEAD".into()];
        let out = check(
            "ls-remote",
            self.upstream_command(git, "ls-remote", args).output(None, 64 * 1024).await?,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let target = text.lines().find_map(|l| l.strip_prefix("ref: ")?.strip_suffix("\tHEAD"));
        if let Some(target) = target.filter(|t| crate::receive::valid_refname(t)) {
            let out = git
                .command(
                    "symbolic-ref",
                    [
                        format!("--git-dir={}", self.dir.display()),
                        "symbolic-ref".into(),
                        "HEAD".into(),
                        target.into(),
                    ],
                )
                .timeout(Duration::from_secs(30))
                .output(None, 4096)
                .await?;
            check("symbolic-ref", out)?;
        }
        Ok(())
    }

    /// `(object id, ref name)` of every head and tag.
    pub async fn refs(&self, git: &Git) -> Result<Vec<(String, String)>, GitGateError> {
        let out = git
            .command(
                "for-each-ref",
                [
                    format!("--git-dir={}", self.dir.display()),
                    "for-each-ref".into(),
                    "--format=%(objectname) %(refname)".into(),
                    "refs/heads/".into(),
                    "refs/tags/".into(),
                ],
            )
            .timeout(Duration::from_secs(60))
            .output(None, 64 * 1024 * 1024)
            .await?;
        let out = check("for-each-ref", out)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect())
    }
}

/// The directory of a fresh quarantine inside `objects` (same filesystem, so migrating
/// is a rename). Removed on drop unless migrated.
#[derive(Debug)]
pub struct Quarantine {
    /// The object directory the push's objects go to.
    pub dir: PathBuf,
    mirror_objects: PathBuf,
}

impl Quarantine {
    /// Creates `objects/incoming-<random>/pack`.
    pub fn create(mirror_objects: &Path) -> Result<Quarantine, GitGateError> {
        let suffix: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..12).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
        };
        let dir = mirror_objects.join(format!("incoming-{suffix}"));
        std::fs::create_dir_all(dir.join("pack"))
            .map_err(|source| GitGateError::Io { path: dir.clone(), source })?;
        Ok(Quarantine { dir, mirror_objects: mirror_objects.to_path_buf() })
    }

    /// `GIT_OBJECT_DIRECTORY` and `GIT_ALTERNATE_OBJECT_DIRECTORIES` for a child that
    /// must see the mirror's objects plus the quarantined ones (and write only here).
    pub fn env(&self) -> [(String, String); 2] {
        [
            ("GIT_OBJECT_DIRECTORY".into(), self.dir.display().to_string()),
            ("GIT_ALTERNATE_OBJECT_DIRECTORIES".into(), self.mirror_objects.display().to_string()),
        ]
    }

    /// Moves the quarantined packs into the mirror: every `.pack` (and `.rev`) before its
    /// `.idx`, since readers find packs by their index.
    pub fn migrate(&self) -> Result<(), GitGateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GitGateError::Io { path, source }
        };
        let src = self.dir.join("pack");
        let dst = self.mirror_objects.join("pack");
        std::fs::create_dir_all(&dst).map_err(io(&dst))?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
            .map_err(io(&src))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort_by_key(|p| (p.extension().is_some_and(|e| e == "idx"), p.clone()));
        for file in files {
            let Some(name) = file.file_name() else { continue };
            let target = dst.join(name);
            if target.exists() {
                continue;
            }
            std::fs::rename(&file, &target).map_err(io(&file))?;
        }
        Ok(())
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
