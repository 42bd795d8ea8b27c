//! `extends`: loading a bottle's ancestors and folding them into one `ResolvedBottle`.
//!
//! Hazard: merge rules decide which routes and credentials a bottle ends up with, so they
//! must be the reference's, exactly, and a broken chain must fail rather than load half
//! of it. Rules (reference section 3.10, issue 268):
//! - `extends` is one name or a list; parents are folded left to right, then the child;
//! - a bottle reached twice (a diamond) is folded once, at its first position;
//! - `env` merges by variable, later wins;
//! - `git-gate.repos` is a union by repo name, later wins per field;
//! - `git-gate.user` overlays per field;
//! - `egress.routes` are concatenated (one host may still have only one route);
//! - scalars (`agent_provider`, `egress.log`, the image) are last-wins, and the prompt is
//!   the body of the last file that has one;
//! - self-reference, cycles and missing parents are errors that show the chain.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use bottle_egress::routes::normalize_host;

use super::discover::{SearchPath, Target};
use super::error::{ManifestError, Result, SourcePos};
use super::{Bottle, GitRepo, GitUser, ImageSource, ManifestWarning, ResolvedBottle, RouteSpec};

/// Most bottle files one resolution reads.
pub const MAX_BOTTLES: usize = 64;

/// Finds the bottle `name_or_path` (see [`Target::parse`]), loads its `extends` graph
/// from the search path and folds it into one bottle.
pub fn resolve(name_or_path: &str, search: &SearchPath) -> Result<ResolvedBottle> {
    let (root, warnings) = match Target::parse(name_or_path)? {
        Target::Name(name) => {
            let warnings = search
                .ignored_in_cwd(&name)
                .map(|path| ManifestWarning::IgnoredCwdBottle { path })
                .into_iter()
                .collect();
            (search.find(&name)?, warnings)
        }
        // Relative to the current directory, so paths taken from the file come out absolute.
        Target::Path(path) => (search.absolute(&path), Vec::new()),
    };
    let mut graph = Graph { search, done: HashSet::new(), order: Vec::new() };
    graph.visit(&root, &mut Vec::new())?;
    let mut resolved = fold(&graph.order, search.home())?;
    resolved.warnings = warnings;
    Ok(resolved)
}

/// The `extends` graph walked depth first; `order` is the fold order.
struct Graph<'a> {
    search: &'a SearchPath,
    done: HashSet<PathBuf>,
    order: Vec<Bottle>,
}

impl Graph<'_> {
    /// Loads `path` and, before it, its parents; `chain` is the path from the root.
    fn visit(&mut self, path: &Path, chain: &mut Vec<(String, PathBuf)>) -> Result<()> {
        let key = identity_of(path);
        if self.done.contains(&key) {
            return Ok(());
        }
        if let Some(pos) = chain.iter().position(|(_, k)| *k == key) {
            let mut names: Vec<String> = chain[pos..].iter().map(|(n, _)| n.clone()).collect();
            names.push(chain[pos].0.clone());
            return Err(ManifestError::Cycle { chain: names });
        }
        if self.order.len() + chain.len() >= MAX_BOTTLES {
            return Err(ManifestError::Merged {
                name: chain.first().map_or_else(String::new, |(n, _)| n.clone()),
                key_path: "extends".into(),
                problem: format!("more than {MAX_BOTTLES} bottles in the extends graph"),
            });
        }
        let bottle = Bottle::load(path)?;
        chain.push((bottle.name.clone(), key.clone()));
        for parent in bottle.extends() {
            let parent_path = self.find_parent(&bottle, parent, chain)?;
            if identity_of(&parent_path) == key {
                return Err(ManifestError::SelfReference {
                    name: bottle.name.clone(),
                    path: bottle.path.clone(),
                });
            }
            self.visit(&parent_path, chain)?;
        }
        chain.pop();
        self.done.insert(key);
        self.order.push(bottle);
        Ok(())
    }

    fn find_parent(
        &self,
        child: &Bottle,
        parent: &str,
        chain: &[(String, PathBuf)],
    ) -> Result<PathBuf> {
        self.search.find(parent).map_err(|err| match err {
            ManifestError::NotFound { searched, .. } => ManifestError::MissingParent {
                child: child.name.clone(),
                parent: parent.to_string(),
                chain: chain.iter().map(|(n, _)| n.clone()).collect(),
                searched,
            },
            other => other,
        })
    }
}

/// The same file reached by two spellings (or a symlink) is one bottle.
fn identity_of(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A repo while folding: fields set so far, and which files declared it.
#[derive(Default)]
struct PartialRepo {
    url: Option<String>,
    identity: Option<PathBuf>,
    host_key: Option<String>,
    token_ref: Option<String>,
    declared_in: Vec<PathBuf>,
}

/// Folds `layers` (parents first, the bottle asked for last).
fn fold(layers: &[Bottle], home: Option<&Path>) -> Result<ResolvedBottle> {
    // The graph walk pushes the bottle asked for last.
    let mut out = ResolvedBottle {
        name: layers.last().map(|root| root.name.clone()).unwrap_or_default(),
        env: BTreeMap::new(),
        routes: Vec::new(),
        egress_log: None,
        git_user: GitUser::default(),
        repos: BTreeMap::new(),
        agent_provider: None,
        image: None,
        prompt: String::new(),
        sources: Vec::new(),
        warnings: Vec::new(),
    };
    let mut route_files: Vec<&Path> = Vec::new();
    let mut repos: BTreeMap<String, PartialRepo> = BTreeMap::new();
    for layer in layers {
        let front = &layer.front;
        out.sources.push(layer.path.clone());
        out.env.extend(front.env.iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(egress) = &front.egress {
            for route in egress.routes.iter().flatten() {
                out.routes.push(route.clone());
                route_files.push(&layer.path);
            }
            out.egress_log = egress.log.clone().or(out.egress_log.take());
        }
        if let Some(gate) = &front.git_gate {
            if let Some(user) = &gate.user {
                out.git_user.name = user.name.clone().or(out.git_user.name.take());
                out.git_user.email = user.email.clone().or(out.git_user.email.take());
            }
            for (name, spec) in gate.repos.iter().flatten() {
                let repo = repos.entry(name.clone()).or_default();
                repo.declared_in.push(layer.path.clone());
                let key_path = format!("git-gate.repos.{name}.identity");
                if let Some(identity) = &spec.identity {
                    repo.identity = Some(host_path(identity, &layer.path, home, &key_path)?);
                }
                repo.url = spec.url.clone().or(repo.url.take());
                repo.host_key = spec.host_key.clone().or(repo.host_key.take());
                repo.token_ref = spec.token_ref.clone().or(repo.token_ref.take());
            }
        }
        out.agent_provider = front.agent_provider.clone().or(out.agent_provider.take());
        if let Some(image) = &front.image {
            out.image = Some(ImageSource::Image(image.clone()));
        }
        if let Some(dockerfile) = &front.dockerfile {
            let path = host_path(dockerfile, &layer.path, home, "dockerfile")?;
            out.image = Some(ImageSource::Dockerfile(path));
        }
        if !layer.prompt.trim().is_empty() {
            out.prompt = layer.prompt.clone();
        }
    }
    check_one_route_per_host(&out.name, &out.routes, &route_files)?;
    out.repos = complete_repos(&out.name, repos)?;
    super::validate::routes_parse(&out.routes).map_err(|(key_path, problem)| {
        ManifestError::Merged { name: out.name.clone(), key_path, problem }
    })?;
    Ok(out)
}

/// `~/x` from the home directory, a relative path from the directory of `file`.
fn host_path(written: &str, file: &Path, home: Option<&Path>, key_path: &str) -> Result<PathBuf> {
    if let Some(rest) = written.strip_prefix("~/") {
        return home.map(|h| h.join(rest)).ok_or_else(|| ManifestError::Invalid {
            at: SourcePos::file(file),
            key_path: key_path.to_string(),
            problem: "the path starts with `~/` but HOME is not set".into(),
        });
    }
    let dir = file.parent().unwrap_or(Path::new(""));
    Ok(dir.join(written))
}

fn check_one_route_per_host(name: &str, routes: &[RouteSpec], files: &[&Path]) -> Result<()> {
    for (i, route) in routes.iter().enumerate() {
        let host = normalize_host(&route.host);
        if let Some(first) = routes[..i].iter().position(|r| normalize_host(&r.host) == host) {
            return Err(ManifestError::Merged {
                name: name.to_string(),
                key_path: format!("egress.routes[{i}]"),
                problem: format!(
                    "host {host:?} is routed by both {} and {}; a host has one route",
                    files[first].display(),
                    files[i].display()
                ),
            });
        }
    }
    Ok(())
}

fn complete_repos(
    name: &str,
    repos: BTreeMap<String, PartialRepo>,
) -> Result<BTreeMap<String, GitRepo>> {
    let mut out = BTreeMap::new();
    for (repo_name, repo) in repos {
        let problem = |field: &str, problem: String| ManifestError::Merged {
            name: name.to_string(),
            key_path: format!("git-gate.repos.{repo_name}.{field}"),
            problem,
        };
        let declared =
            repo.declared_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let missing = |field: &str| {
            problem(
                field,
                format!("required, and no file sets it (the repo is declared in {declared})"),
            )
        };
        let url = repo.url.clone().ok_or_else(|| missing("url"))?;
        let repo = if url.starts_with("https://") {
            for (field, set) in
                [("identity", repo.identity.is_some()), ("host_key", repo.host_key.is_some())]
            {
                if set {
                    return Err(problem(
                        field,
                        "is for ssh upstreams; an https one uses token_ref".into(),
                    ));
                }
            }
            GitRepo { url, identity: None, host_key: None, token_ref: repo.token_ref.clone() }
        } else {
            if repo.token_ref.is_some() {
                return Err(problem(
                    "token_ref",
                    "is for https upstreams; an ssh one uses identity".into(),
                ));
            }
            let identity = repo.identity.clone().ok_or_else(|| missing("identity"))?;
            let host_key = repo.host_key.clone().ok_or_else(|| missing("host_key"))?;
            GitRepo { url, identity: Some(identity), host_key: Some(host_key), token_ref: None }
        };
        out.insert(repo_name, repo);
    }
    Ok(out)
}
