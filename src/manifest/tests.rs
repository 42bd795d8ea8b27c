//! Manifest tests against fixtures in the reference format (tests/fixtures/manifests):
//! a fake home with both bottle directories, a current directory with a `bottles/`
//! folder that must be ignored, and one file per error path.

use std::path::{Path, PathBuf};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests")
}

fn search() -> SearchPath {
    let root = fixtures();
    SearchPath::new(Some(&root.join("home")), None, Some(&root.join("cwd")))
}

/// Paths in messages are shown relative to the fixture root.
fn relative(text: &str) -> String {
    text.replace(&format!("{}/", fixtures().display()), "")
}

fn resolve_ok(name_or_path: &str) -> ResolvedBottle {
    match resolve(name_or_path, &search()) {
        Ok(bottle) => bottle,
        Err(err) => panic!("{name_or_path}: {err}"),
    }
}

fn resolve_err(name_or_path: &str) -> ManifestError {
    match resolve(name_or_path, &search()) {
        Ok(bottle) => panic!("{name_or_path} resolved: {bottle:?}"),
        Err(err) => err,
    }
}

/// A stable text form of a resolved bottle, for golden comparisons.
fn render(bottle: &ResolvedBottle) -> String {
    let mut out = vec![format!("name: {}", bottle.name)];
    for (k, v) in &bottle.env {
        out.push(format!("env {k}={}", v.expose()));
    }
    for r in &bottle.routes {
        out.push(format!("route {}", r.host));
    }
    out.push(format!("egress.log: {:?}", bottle.egress_log));
    out.push(format!("user: {:?} {:?}", bottle.git_user.name, bottle.git_user.email));
    for (name, r) in &bottle.repos {
        let identity = r.identity.as_ref().map(|i| relative(&i.display().to_string()));
        let identity = identity.unwrap_or_default();
        let host_key = r.host_key.clone().unwrap_or_default();
        out.push(format!("repo {name}: {} {identity} {host_key}", r.url));
    }
    out.push(format!("agent_provider: {:?}", bottle.agent_provider));
    let image = match &bottle.image {
        Some(ImageSource::Image(i)) => format!("image {i}"),
        Some(ImageSource::Dockerfile(p)) => {
            format!("dockerfile {}", relative(&p.display().to_string()))
        }
        None => "none".into(),
    };
    out.push(format!("image: {image}"));
    out.push(format!("prompt: {:?}", bottle.prompt));
    for s in &bottle.sources {
        out.push(format!("from {}", relative(&s.display().to_string())));
    }
    out.join("\n")
}

const CONFIG: &str = "home/.config/bottle/bottles";

// === discovery and the trust boundary ===

#[test]
fn a_plain_bottle_reads_every_key() {
    let bottle = resolve_ok("plain");
    assert_eq!(
        render(&bottle),
        format!(
            "name: plain
env ANTHROPIC_BASE_URL=https://api.anthropic.com
env EDITOR=vi
env PORT=8080
route api.github.com
route pypi.org
egress.log: Some(Enabled(true))
user: Some(\"Bot\") Some(\"bot@example.com\")
repo app: ssh://git@example.com/org/app.git home/.ssh/app_deploy ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlainKeyForTests
agent_provider: Some(\"claude\")
image: image node:22-bookworm
prompt: \"You work on the app repository. Push through the git gate.\"
from {CONFIG}/plain.md"
        )
    );
    let github = &bottle.routes[0];
    let auth = github.auth.as_ref().unwrap();
    assert_eq!(auth.token_ref, "GITHUB_TOKEN");
    assert_eq!(github.matches[0].methods, ["GET", "POST"]);
    assert_eq!(
        github.dlp.as_ref().unwrap().outbound_on_match,
        Some(bottle_egress::routes::OnMatch::Hold),
        "the reference's `supervise` is the hold policy"
    );
}

#[test]
fn a_bottles_folder_in_the_current_directory_is_ignored_with_a_warning() {
    let bottle = resolve_ok("plain");
    assert_eq!(bottle.sources, [fixtures().join(CONFIG).join("plain.md")]);
    assert!(bottle.routes.iter().all(|r| r.host != "attacker.example"));
    assert_eq!(
        bottle.warnings,
        [ManifestWarning::IgnoredCwdBottle { path: fixtures().join("cwd/bottles/plain.md") }]
    );
    assert_eq!(
        relative(&bottle.warnings[0].to_string()),
        "ignoring cwd/bottles/plain.md: bottles are never read from the current directory (pass the path explicitly if you trust it)"
    );
}

#[test]
fn a_bottle_only_in_the_current_directory_is_not_found_and_the_error_says_why() {
    let err = resolve_err("evil");
    let ManifestError::NotFound { name, searched, ignored_in_cwd } = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert_eq!(name, "evil");
    assert_eq!(
        searched,
        &[
            fixtures().join(CONFIG).join("evil.md"),
            fixtures().join("home/.bot-bottle/bottles/evil.md")
        ]
    );
    assert_eq!(ignored_in_cwd.as_deref(), Some(fixtures().join("cwd/bottles/evil.md").as_path()));
    assert_eq!(
        relative(&err.to_string()),
        "no bottle named \"evil\" (looked in home/.config/bottle/bottles/evil.md, home/.bot-bottle/bottles/evil.md); cwd/bottles/evil.md exists but bottles are never read from the current directory: pass its path explicitly if you trust it"
    );
}

#[test]
fn an_explicit_path_is_read_even_outside_the_search_path() {
    let path = fixtures().join("cwd/bottles/evil.md");
    let bottle = resolve_ok(path.to_str().unwrap());
    assert_eq!(bottle.name, "evil");
    assert_eq!(bottle.routes[0].host, "attacker.example");
    assert!(bottle.warnings.is_empty());
}

#[test]
fn a_relative_path_is_taken_from_the_current_directory() {
    let bottle = resolve_ok("../home/.config/bottle/bottles/base.md");
    assert_eq!(bottle.sources, [fixtures().join("cwd/../home/.config/bottle/bottles/base.md")]);
    let identity = bottle.repos["shared"].identity.as_ref().unwrap();
    assert!(identity.is_absolute(), "{}", identity.display());
    assert!(identity.ends_with("home/.config/bottle/bottles/keys/shared"));
}

#[test]
fn the_reference_systems_directory_is_searched_second() {
    assert_eq!(resolve_ok("shadowed").env["WHERE"].expose(), "config");
    let legacy = resolve_ok("legacy");
    assert_eq!(legacy.env["WHERE"].expose(), "legacy");
    assert_eq!(
        legacy.sources,
        [
            fixtures().join(CONFIG).join("base.md"),
            fixtures().join("home/.bot-bottle/bottles/legacy.md")
        ]
    );
}

#[test]
fn a_bad_name_on_the_command_line_is_refused_before_any_lookup() {
    let err = resolve_err("Bad_Name");
    assert!(matches!(&err, ManifestError::BadName { name, .. } if name == "Bad_Name"), "{err:?}");
    assert_eq!(
        err.to_string(),
        "bottle name \"Bad_Name\" is invalid: a name starts with a lowercase letter (a-z)"
    );
}

#[test]
fn a_file_whose_name_is_not_a_bottle_name_is_refused_even_by_path() {
    let path = fixtures().join(CONFIG).join("Bad_Name.md");
    let err = resolve_err(path.to_str().unwrap());
    assert_eq!(
        err.to_string(),
        "bottle name \"Bad_Name\" is invalid: a name starts with a lowercase letter (a-z)"
    );
}

#[test]
fn without_home_nothing_is_searched() {
    let err = resolve("plain", &SearchPath::new(None, None, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no bottle named \"plain\" (looked in nowhere: neither HOME nor XDG_CONFIG_HOME is set)"
    );
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_read_like_plain_files() {
    let bottle = resolve_ok("crlf-bom");
    assert_eq!(bottle.env["A"].expose(), "b");
    assert_eq!(bottle.agent_provider.as_deref(), Some("claude"));
    assert_eq!(bottle.prompt, "Windows prompt.");
}

// === extends: merge rules (F2) ===

#[test]
fn single_extends_merges_env_repos_user_routes_and_scalars() {
    assert_eq!(
        render(&resolve_ok("child")),
        format!(
            "name: child
env A=from-base
env B=from-child
env C=from-child
route api.base.example
route child.example
egress.log: None
user: Some(\"Base Bot\") Some(\"child@example.com\")
repo own: ssh://git@example.com/org/own.git /keys/own ssh-ed25519 AAAAOwnKey
repo shared: ssh://git@example.com/org/shared-fork.git {CONFIG}/keys/shared ssh-ed25519 AAAABaseKey
agent_provider: Some(\"codex\")
image: image base:1
prompt: \"Base prompt.\"
from {CONFIG}/base.md
from {CONFIG}/child.md"
        )
    );
}

#[test]
fn list_extends_folds_left_to_right_then_the_child() {
    assert_eq!(
        render(&resolve_ok("multi")),
        format!(
            "name: multi
env A=from-base
env B=from-extra
env D=from-multi
route api.base.example
route extra.example
egress.log: Some(Level(\"verbose\"))
user: Some(\"Base Bot\") Some(\"base@example.com\")
repo shared: ssh://git@example.com/org/shared.git {CONFIG}/keys/shared ssh-ed25519 AAAAExtraKey
agent_provider: Some(\"claude\")
image: dockerfile {CONFIG}/Dockerfile.extra
prompt: \"Extra prompt.\"
from {CONFIG}/base.md
from {CONFIG}/extra.md
from {CONFIG}/multi.md"
        )
    );
}

#[test]
fn a_diamond_folds_the_shared_parent_once_at_its_first_position() {
    assert_eq!(
        render(&resolve_ok("diamond")),
        format!(
            "name: diamond
env A=from-base
env B=from-right
env L=left
env R=right
route api.base.example
route left.example
route right.example
egress.log: None
user: Some(\"Base Bot\") Some(\"base@example.com\")
repo shared: ssh://git@example.com/org/shared.git {CONFIG}/keys/shared ssh-ed25519 AAAABaseKey
agent_provider: Some(\"claude\")
image: image base:1
prompt: \"Right prompt.\"
from {CONFIG}/base.md
from {CONFIG}/left.md
from {CONFIG}/right.md
from {CONFIG}/diamond.md"
        )
    );
}

#[test]
fn a_cycle_is_an_error_that_shows_the_loop() {
    let err = resolve_err("cycle-a");
    let ManifestError::Cycle { chain } = &err else { panic!("expected Cycle, got {err:?}") };
    assert_eq!(chain, &["cycle-a", "cycle-b", "cycle-c", "cycle-a"]);
    assert_eq!(
        err.to_string(),
        "bottles extend each other in a cycle: cycle-a -> cycle-b -> cycle-c -> cycle-a"
    );
    // Entering the loop elsewhere names the loop from there.
    let ManifestError::Cycle { chain } = resolve_err("cycle-b") else { panic!("expected Cycle") };
    assert_eq!(chain, ["cycle-b", "cycle-c", "cycle-a", "cycle-b"]);
}

#[test]
fn a_bottle_that_extends_itself_is_an_error() {
    let err = resolve_err("selfish");
    assert!(
        matches!(&err, ManifestError::SelfReference { name, .. } if name == "selfish"),
        "{err:?}"
    );
    assert_eq!(
        relative(&err.to_string()),
        format!("{CONFIG}/selfish.md: bottle \"selfish\" extends itself")
    );
}

#[test]
fn a_missing_parent_is_an_error_that_shows_the_chain() {
    let err = resolve_err("orphan");
    let ManifestError::MissingParent { child, parent, chain, .. } = &err else {
        panic!("expected MissingParent, got {err:?}");
    };
    assert_eq!((child.as_str(), parent.as_str()), ("orphan-parent", "does-not-exist"));
    assert_eq!(chain, &["orphan", "orphan-parent"]);
    assert_eq!(
        relative(&err.to_string()),
        "bottle \"orphan-parent\" extends \"does-not-exist\", which does not exist (chain: orphan -> orphan-parent; looked in home/.config/bottle/bottles/does-not-exist.md, home/.bot-bottle/bottles/does-not-exist.md)"
    );
}

#[test]
fn one_host_routed_by_two_files_is_an_error_naming_both() {
    let err = resolve_err("dup-host");
    assert!(
        matches!(&err, ManifestError::Merged { key_path, .. } if key_path == "egress.routes[1]"),
        "{err:?}"
    );
    assert_eq!(
        relative(&err.to_string()),
        format!(
            "bottle \"dup-host\": `egress.routes[1]`: host \"api.base.example\" is routed by both {CONFIG}/base.md and {CONFIG}/dup-host.md; a host has one route"
        )
    );
}

#[test]
fn a_repo_without_identity_after_merging_is_an_error() {
    let err = resolve_err("incomplete");
    assert_eq!(
        relative(&err.to_string()),
        format!(
            "bottle \"incomplete\": `git-gate.repos.half.identity`: required, and no file sets it (the repo is declared in {CONFIG}/incomplete.md)"
        )
    );
}

// === one file: every error path (F1) ===

/// Each error fixture with its message (paths relative to the fixture root). The message
/// carries the file, the line when the parser knows it, the key path and the reason.
const ERROR_CASES: &[(&str, &str)] = &[
    ("unknown-top.md", "errors/unknown-top.md:4: unknown key `egres`; did you mean `egress`?"),
    (
        "unknown-egress.md",
        "errors/unknown-egress.md:3: unknown key `egress.route`; did you mean `routes`?",
    ),
    (
        "unknown-route.md",
        "errors/unknown-route.md:6: unknown key `egress.routes[1].matchs`; did you mean `matches`?",
    ),
    (
        "unknown-match.md",
        "errors/unknown-match.md:7: unknown key `egress.routes[0].matches[0].method`; did you mean `methods`?",
    ),
    (
        "unknown-git-gate.md",
        "errors/unknown-git-gate.md:3: unknown key `git-gate.repo`; did you mean `repos`?",
    ),
    (
        "unknown-repo-field.md",
        "errors/unknown-repo-field.md:5: unknown key `git-gate.repos.myrepo.ulr`; did you mean `url`?",
    ),
    (
        "unknown-user-field.md",
        "errors/unknown-user-field.md:4: unknown key `git-gate.user.mail`; did you mean `email`?",
    ),
    (
        "removed-supervise.md",
        "errors/removed-supervise.md:4: key `supervise` is no longer accepted: supervision is always on (held requests wait in the approval queue, see `bottle approvals`); delete the key",
    ),
    (
        "removed-git.md",
        "errors/removed-git.md:2: key `git` is no longer accepted: `git` was renamed: write the upstreams as `git-gate: {repos: {<name>: {url, identity, host_key}}}`",
    ),
    (
        "removed-role.md",
        "errors/removed-role.md:6: key `egress.routes[1].role` is no longer accepted: `role` is reserved: provider routes (for example the model API) come from `agent_provider`; delete the key",
    ),
    (
        "removed-path-allowlist.md",
        "errors/removed-path-allowlist.md:5: key `egress.routes[0].path_allowlist` is no longer accepted: `path_allowlist` was replaced by `matches`: write `matches: [{paths: [{type: prefix, value: /api/}]}]`",
    ),
    (
        "env-number.md",
        "errors/env-number.md:3: `env.PORT`: expected a string (quote values that read as numbers or booleans)",
    ),
    ("env-not-a-string.md", "errors/env-not-a-string.md:3: `env.TOKEN`: expected a string scalar"),
    (
        "env-bad-name.md",
        "errors/env-bad-name.md: `env.MY-VAR`: a variable name is [A-Za-z_][A-Za-z0-9_]*",
    ),
    (
        "env-launcher-owned.md",
        "errors/env-launcher-owned.md: `env.HTTPS_PROXY`: set by the launcher; a bottle cannot override it",
    ),
    (
        "extends-bad-name.md",
        "errors/extends-bad-name.md: `extends[1]`: \"../escape\" is not a bottle name: a name starts with a lowercase letter (a-z)",
    ),
    (
        "extends-wrong-type.md",
        "errors/extends-wrong-type.md:2: `extends`: expected a bottle name or a list of bottle names",
    ),
    (
        "image-and-dockerfile.md",
        "errors/image-and-dockerfile.md: `image`: `image` and `dockerfile` exclude each other; keep one",
    ),
    (
        "repo-https-url.md",
        "errors/repo-https-url.md: `git-gate.repos.app.url`: upstreams are ssh:// or https://: write ssh://[user@]host[:port]/path",
    ),
    (
        "route-gate-host.md",
        "errors/route-gate-host.md: `egress.routes[0].host`: this host is the bottle's git gate; the launcher routes it",
    ),
    (
        "route-git-push.md",
        "errors/route-git-push.md: `egress.routes[0].git.push`: pushes go through the git gate only: declare the repo under git-gate.repos",
    ),
    (
        "repo-bad-name.md",
        "errors/repo-bad-name.md: `git-gate.repos.-upload-pack`: a repo name is [A-Za-z0-9._-]+, not only dots and not starting with '-'",
    ),
    (
        "route-bad-method.md",
        "errors/route-bad-method.md: `egress.routes[1]`: route \"b.example\": unknown method \"FETCH\"",
    ),
    (
        "route-duplicate-host.md",
        "errors/route-duplicate-host.md: `egress.routes[1]`: route \"a.example\": duplicate host",
    ),
    (
        "route-missing-host.md",
        "errors/route-missing-host.md:4: `egress.routes[0]` needs the key `host`",
    ),
    (
        "route-unknown-scheme.md",
        "errors/route-unknown-scheme.md:5: `egress.routes[0].auth.scheme`: unknown value, expected one of Bearer, token, Basic, header; did you mean `Bearer`?",
    ),
    ("duplicate-key.md", "errors/duplicate-key.md:4: duplicate key `env.A`"),
    ("syntax.md", "errors/syntax.md:3: invalid YAML in the frontmatter: unclosed quote"),
    (
        "agent-provider-bad.md",
        "errors/agent-provider-bad.md: `agent_provider`: a provider name is [a-z][a-z0-9_-]* (claude, codex, pi or a plugin's name)",
    ),
    (
        "no-frontmatter.md",
        "errors/no-frontmatter.md: no frontmatter: a bottle file starts with a line `---`",
    ),
    (
        "unclosed.md",
        "errors/unclosed.md: the frontmatter opened on line 1 is not closed by a line `---`",
    ),
];

#[test]
fn every_error_fixture_fails_with_its_key_path_and_reason() {
    let mut failures = Vec::new();
    for (file, expected) in ERROR_CASES {
        let path = fixtures().join("errors").join(file);
        let got = match Bottle::load(&path) {
            Ok(_) => "loaded without error".to_string(),
            Err(err) => relative(&err.to_string()),
        };
        if got != *expected {
            failures.push(format!("{file}\n  expected: {expected}\n  got:      {got}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_error_fixture_is_in_the_table() {
    let mut files: Vec<String> = std::fs::read_dir(fixtures().join("errors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut listed: Vec<String> = ERROR_CASES.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn unknown_and_removed_keys_carry_structured_fields() {
    let load = |file: &str| Bottle::load(&fixtures().join("errors").join(file)).unwrap_err();
    match load("unknown-repo-field.md") {
        ManifestError::UnknownKey { at, key_path, suggestion } => {
            assert_eq!(at.line, Some(5));
            assert_eq!(key_path, "git-gate.repos.myrepo.ulr");
            assert_eq!(suggestion, Some("url"));
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    match load("removed-role.md") {
        ManifestError::RemovedKey { at, key_path, .. } => {
            assert_eq!((at.line, key_path.as_str()), (Some(6), "egress.routes[1].role"));
        }
        other => panic!("expected RemovedKey, got {other:?}"),
    }
}

#[test]
fn a_far_off_unknown_key_gets_no_suggestion_and_reserved_keys_are_never_suggested() {
    let err = Bottle::parse(Path::new("/b/x.md"), "---\nwhatever_this_is: 1\n---\n").unwrap_err();
    assert_eq!(err.to_string(), "/b/x.md:2: unknown key `whatever_this_is`");
    let err = Bottle::parse(
        Path::new("/b/x.md"),
        "---\negress:\n  routes:\n    - host: a\n      rol: x\n---\n",
    )
    .unwrap_err();
    assert!(matches!(&err, ManifestError::UnknownKey { suggestion: None, .. }), "{err:?}");
}

#[test]
fn an_empty_frontmatter_is_an_empty_bottle() {
    let bottle =
        Bottle::parse(Path::new("/b/empty.md"), "---\n# nothing yet\n---\nJust a prompt.\n")
            .unwrap();
    assert_eq!(bottle.prompt, "Just a prompt.");
    assert!(bottle.extends().is_empty());
}

#[test]
fn an_oversized_or_binary_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.md");
    std::fs::write(&big, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
    let err = Bottle::load(&big).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("bottle file {} is larger than 262144 bytes", big.display())
    );
    let binary = dir.path().join("bin.md");
    std::fs::write(&binary, b"---\n\xff\xfe\n---\n").unwrap();
    let err = Bottle::load(&binary).unwrap_err();
    assert_eq!(err.to_string(), format!("bottle file {} is not UTF-8 text", binary.display()));
    let missing = dir.path().join("missing.md");
    let err = Bottle::load(&missing).unwrap_err();
    assert!(matches!(&err, ManifestError::Read { path, .. } if *path == missing), "{err:?}");
}

// === secrets ===

#[test]
fn no_error_repeats_a_value_from_the_file() {
    for file in ["env-not-a-string.md", "syntax.md", "env-launcher-owned.md"] {
        let err = Bottle::load(&fixtures().join("errors").join(file)).unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("s3cr3t"), "{file}: {shown}");
            assert!(!shown.contains("attacker.example"), "{file}: {shown}");
        }
    }
    let text = "---\nenv:\n  SECRET: \"tok-0123456789\"\n  SECRET: other\n---\n";
    let err = Bottle::parse(Path::new("/b/x.md"), text).unwrap_err();
    assert_eq!(err.to_string(), "/b/x.md:4: duplicate key `env.SECRET`");
    let text = "---\nenv:\n  SECRET: tok-0123456789\n  bad indent: x\n ---\n---\n";
    let err = Bottle::parse(Path::new("/b/x.md"), text).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("tok-0123456789"), "{err:?}");
}

#[test]
fn env_values_are_redacted_in_debug_output() {
    let bottle = resolve_ok("plain");
    let debug = format!("{bottle:?}");
    assert!(!debug.contains("https://api.anthropic.com"), "{debug}");
    assert!(debug.contains("EnvValue(<25 bytes>)"), "{debug}");
}

// === routes reach the proxy as written ===

#[test]
fn the_routes_file_text_is_what_the_egress_proxy_loads() {
    let bottle = resolve_ok("plain");
    let text = bottle.routes_file_text();
    assert!(!text.contains("token-resolved-at-launch"));
    let env = |name: &str| (name == "GITHUB_TOKEN").then(|| "ghp_real".to_string());
    let table = bottle_egress::routes::RouteTable::parse(&text, &env).unwrap();
    let specs: Vec<&RouteSpec> = table.routes().iter().map(|r| &r.spec).collect();
    assert_eq!(specs, bottle.routes.iter().collect::<Vec<_>>());
    assert_eq!(table.get("api.github.com").unwrap().token(), Some("ghp_real"));
}

// === examples/ ===

#[test]
fn every_example_bottle_resolves_on_its_own() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let empty_home = tempfile::tempdir().unwrap();
    let search = SearchPath::new(Some(empty_home.path()), None, None);
    let mut n = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            if let Err(err) = resolve(path.to_str().unwrap(), &search) {
                panic!("{err}");
            }
            n += 1;
        }
    }
    assert!(n >= 2, "only {n} example bottles in {}", examples.display());
}

#[test]
fn an_https_repo_names_its_token_and_takes_no_ssh_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("web.md");
    let https = "---\ngit-gate:\n  repos:\n    web:\n      url: https://example.com/o/web.git\n      token_ref: GH_TOKEN\n";
    std::fs::write(&file, format!("{https}---\n")).unwrap();
    let bottle = resolve_ok(file.to_str().unwrap());
    let web = &bottle.repos["web"];
    assert_eq!(web.token_ref.as_deref(), Some("GH_TOKEN"));
    assert_eq!((web.identity.as_ref(), web.host_key.as_ref()), (None, None));
    std::fs::write(&file, format!("{https}      host_key: ssh-ed25519 AAAA\n---\n")).unwrap();
    let err = resolve_err(file.to_str().unwrap()).to_string();
    assert!(
        err.ends_with(
            "`git-gate.repos.web.host_key`: is for ssh upstreams; an https one uses token_ref"
        ),
        "{err}"
    );
    std::fs::write(
        &file,
        "---\ngit-gate:\n  repos:\n    web:\n      url: https://u:p@example.com/o/web.git\n---\n",
    )
    .unwrap();
    let err = resolve_err(file.to_str().unwrap()).to_string();
    assert!(err.contains("credentials do not belong in the URL"), "{err}");
}
