//! The `bottle-init` configuration file (TOML) and its validation.
//!
//! Hazard: a typo in a sidecar config must not start a half-configured sidecar, and an
//! error must never print a secret. Every key is checked against the schema (an unknown
//! key is an error that names it and suggests the closest valid one); every reference
//! (`pass_env`, `usr1_restarts`, `BOTTLE_SIDECAR_DAEMONS`, builtins) is resolved before
//! anything starts; errors name variables, never their values.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_runtime::backoff::Backoff;
use bottle_runtime::policy::{RestartType, Strategy};
use bottle_runtime::spec::{ChildSpec, ChildStart, ProcessSpec, Readiness, SupervisorSpec};
use serde::Deserialize;

use crate::builtin;

/// Default control socket.
pub(crate) const DEFAULT_CONTROL_SOCKET: &str = "/run/bottle-init/control.sock";

/// Why a configuration was refused. Nothing is started when one is returned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigFileError {
    #[error("cannot read config {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path:?} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown key {key:?} in {location}{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    UnknownKey { key: String, location: String, suggestion: Option<String> },
    #[error("{location}: {problem}")]
    Invalid { location: String, problem: String },
    #[error("invalid supervision spec")]
    Spec(#[from] bottle_runtime::spec::ConfigError),
}

type Result<T> = std::result::Result<T, ConfigFileError>;

fn invalid(location: impl Into<String>, problem: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Invalid { location: location.into(), problem: problem.into() }
}

// The schema. serde's deny_unknown_fields backs up the friendlier check in `check_keys`.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InitConfig {
    #[serde(default = "default_grace")]
    pub(crate) grace_seconds: f64,
    #[serde(default)]
    pub(crate) control_socket: Option<PathBuf>,
    #[serde(default)]
    pub(crate) exit_report: Option<PathBuf>,
    #[serde(default = "default_strategy")]
    pub(crate) strategy: Strategy,
    #[serde(default)]
    pub(crate) intensity: Option<IntensityConfig>,
    #[serde(default)]
    pub(crate) usr1_restarts: Vec<String>,
    #[serde(default)]
    pub(crate) daemon: Vec<DaemonConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntensityConfig {
    pub(crate) max_restarts: u32,
    pub(crate) period_seconds: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DaemonConfig {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) command: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) builtin: Option<String>,
    #[serde(default = "default_restart")]
    pub(crate) restart: RestartType,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) pass_env: Vec<String>,
    #[serde(default)]
    pub(crate) cwd: Option<PathBuf>,
    #[serde(default)]
    pub(crate) significant: bool,
    #[serde(default = "default_stop_timeout")]
    pub(crate) stop_timeout: f64,
    #[serde(default = "default_permanent_codes")]
    pub(crate) permanent_exit_codes: Vec<i32>,
    #[serde(default)]
    pub(crate) reload_signal: Option<String>,
    #[serde(default)]
    pub(crate) ready: Option<ReadyConfig>,
    #[serde(default)]
    pub(crate) backoff: Option<BackoffConfig>,
    #[serde(default = "default_reset_after")]
    pub(crate) reset_after: f64,
    #[serde(default)]
    pub(crate) config: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadyConfig {
    #[serde(default)]
    pub(crate) tcp: Option<String>,
    #[serde(default)]
    pub(crate) unix: Option<PathBuf>,
    #[serde(default)]
    pub(crate) notify_fd: Option<i32>,
    #[serde(default)]
    pub(crate) sd_notify: Option<bool>,
    #[serde(default = "default_ready_deadline")]
    pub(crate) deadline: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackoffConfig {
    #[serde(default)]
    pub(crate) initial: Option<f64>,
    #[serde(default)]
    pub(crate) factor: Option<f64>,
    #[serde(default)]
    pub(crate) cap: Option<f64>,
    #[serde(default)]
    pub(crate) jitter: Option<f64>,
}

fn default_grace() -> f64 {
    8.0
}
fn default_strategy() -> Strategy {
    Strategy::OneForOne
}
fn default_restart() -> RestartType {
    RestartType::Permanent
}
fn default_stop_timeout() -> f64 {
    5.0
}
fn default_permanent_codes() -> Vec<i32> {
    vec![78]
}
fn default_reset_after() -> f64 {
    10.0
}
fn default_ready_deadline() -> f64 {
    10.0
}

const TOP_KEYS: &[&str] = &[
    "grace_seconds",
    "control_socket",
    "exit_report",
    "strategy",
    "intensity",
    "usr1_restarts",
    "daemon",
];
const INTENSITY_KEYS: &[&str] = &["max_restarts", "period_seconds"];
const DAEMON_KEYS: &[&str] = &[
    "name",
    "command",
    "builtin",
    "restart",
    "env",
    "pass_env",
    "cwd",
    "significant",
    "stop_timeout",
    "permanent_exit_codes",
    "reload_signal",
    "ready",
    "backoff",
    "reset_after",
    "config",
];
const READY_KEYS: &[&str] = &["tcp", "unix", "notify_fd", "sd_notify", "deadline"];
const BACKOFF_KEYS: &[&str] = &["initial", "factor", "cap", "jitter"];

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn suggest(key: &str, valid: &[&str]) -> Option<String> {
    valid
        .iter()
        .map(|v| (distance(key, v), *v))
        .filter(|(d, v)| *d <= (v.len() / 2).max(2))
        .min()
        .map(|(_, v)| v.to_string())
}

fn check_table(table: &toml::Table, valid: &[&str], location: &str) -> Result<()> {
    for key in table.keys() {
        if !valid.contains(&key.as_str()) {
            return Err(ConfigFileError::UnknownKey {
                key: key.clone(),
                location: location.to_string(),
                suggestion: suggest(key, valid),
            });
        }
    }
    Ok(())
}

fn check_keys(root: &toml::Table) -> Result<()> {
    check_table(root, TOP_KEYS, "the top level")?;
    if let Some(toml::Value::Table(t)) = root.get("intensity") {
        check_table(t, INTENSITY_KEYS, "[intensity]")?;
    }
    if let Some(toml::Value::Array(daemons)) = root.get("daemon") {
        for (i, daemon) in daemons.iter().enumerate() {
            let Some(t) = daemon.as_table() else { continue };
            let name = t.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            let location = format!("[[daemon]] #{} ({name:?})", i + 1);
            check_table(t, DAEMON_KEYS, &location)?;
            if let Some(toml::Value::Table(r)) = t.get("ready") {
                check_table(r, READY_KEYS, &format!("{location}.ready"))?;
            }
            if let Some(toml::Value::Table(b)) = t.get("backoff") {
                check_table(b, BACKOFF_KEYS, &format!("{location}.backoff"))?;
            }
        }
    }
    Ok(())
}

/// A TOML error without the offending text: toml quotes the whole source line, and a
/// config line may hold a secret (`env = { TOKEN = "..." }`). Keeps the message and the
/// position; any double-quoted value inside the message is replaced by `"..."`.
fn safe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let mut message = String::new();
    let mut in_quotes = false;
    for c in e.message().chars() {
        if c == '"' {
            if in_quotes {
                message.push_str("...\"");
            } else {
                message.push('"');
            }
            in_quotes = !in_quotes;
        } else if !in_quotes {
            message.push(c);
        }
    }
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

fn seconds(value: f64, location: &str, field: &str, allow_zero: bool) -> Result<Duration> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        let bound = if allow_zero { ">= 0" } else { "> 0" };
        return Err(invalid(location, format!("{field} must be {bound} seconds, got {value}")));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|_| invalid(location, format!("{field} is out of range: {value}")))
}

impl InitConfig {
    /// Reads and parses `path`, checking every key.
    pub(crate) fn load(path: &Path) -> Result<InitConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigFileError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    pub(crate) fn parse(text: &str, path: &Path) -> Result<InitConfig> {
        let parse_error = |e: toml::de::Error| ConfigFileError::Parse {
            path: path.to_path_buf(),
            message: safe_toml_error(&e, text),
        };
        let table: toml::Table = text.parse().map_err(parse_error)?;
        check_keys(&table)?;
        let config: InitConfig = toml::Value::Table(table).try_into().map_err(parse_error)?;
        Ok(config)
    }

    /// Grace budget from the first SIGTERM to exit.
    pub(crate) fn grace(&self) -> Result<Duration> {
        seconds(self.grace_seconds, "the top level", "grace_seconds", false)
    }

    /// Builds the supervision tree, resolving `pass_env` from `environ` and narrowing the
    /// daemon set to `only` (BOTTLE_SIDECAR_DAEMONS).
    pub(crate) fn to_spec(
        &self,
        environ: &BTreeMap<String, OsString>,
        only: Option<&str>,
    ) -> Result<SupervisorSpec> {
        self.grace()?;
        let names: Vec<&str> = self.daemon.iter().map(|d| d.name.as_str()).collect();
        let mut seen = HashSet::new();
        for name in &names {
            if !seen.insert(*name) {
                return Err(invalid("[[daemon]]", format!("duplicate daemon name {name:?}")));
            }
        }
        for name in &self.usr1_restarts {
            if !names.contains(&name.as_str()) {
                return Err(invalid("usr1_restarts", format!("no daemon named {name:?}")));
            }
        }
        let selected: Option<Vec<&str>> = match only {
            Some(list) if !list.trim().is_empty() => {
                let wanted: Vec<&str> =
                    list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
                for name in &wanted {
                    if !names.contains(name) {
                        return Err(invalid(
                            "BOTTLE_SIDECAR_DAEMONS",
                            format!("no daemon named {name:?} (configured: {})", names.join(", ")),
                        ));
                    }
                }
                Some(wanted)
            }
            _ => None,
        };
        let mut spec = SupervisorSpec::new("init").strategy(self.strategy);
        if let Some(intensity) = &self.intensity {
            let period = seconds(intensity.period_seconds, "[intensity]", "period_seconds", false)?;
            spec = spec.intensity(intensity.max_restarts, period);
        } else {
            // A sidecar daemon that crashes a few times should not take the bottle down:
            // 5 restarts in 30 s before the root gives up (OTP's 1 in 5 s is for trees
            // whose parents restart them).
            spec = spec.intensity(5, Duration::from_secs(30));
        }
        for daemon in &self.daemon {
            if selected.as_ref().is_some_and(|s| !s.contains(&daemon.name.as_str())) {
                continue;
            }
            spec = spec.child(daemon.to_child(environ)?);
        }
        spec.validate()?;
        Ok(spec)
    }
}

impl DaemonConfig {
    fn location(&self) -> String {
        format!("daemon {:?}", self.name)
    }

    /// The signal sent to this daemon's process group on reload, if any.
    pub(crate) fn reload_signal(&self) -> Result<Option<i32>> {
        match &self.reload_signal {
            None => Ok(None),
            Some(name) => bottle_runtime::proc::signal::parse(name).map(Some).ok_or_else(|| {
                invalid(self.location(), format!("reload_signal {name:?} is not a signal"))
            }),
        }
    }

    fn to_child(&self, environ: &BTreeMap<String, OsString>) -> Result<ChildSpec> {
        let location = self.location();
        self.reload_signal()?;
        let start = match (&self.command, &self.builtin) {
            (Some(_), Some(_)) => {
                return Err(invalid(location, "set either command or builtin, not both"));
            }
            (None, None) => return Err(invalid(location, "set command (an argv list) or builtin")),
            (None, Some(name)) => {
                if !self.env.is_empty() || !self.pass_env.is_empty() || self.ready.is_some() {
                    return Err(invalid(
                        location,
                        "env, pass_env and ready apply to command daemons only",
                    ));
                }
                let factory = builtin::create(name, self.config.as_ref())
                    .map_err(|problem| invalid(&location, problem))?;
                ChildStart::Actor(factory)
            }
            (Some(argv), None) => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(invalid(location, "command is empty: nothing to execute"));
                }
                if self.config.is_some() {
                    return Err(invalid(location, "config applies to builtin daemons only"));
                }
                let mut env: Vec<(OsString, OsString)> = Vec::new();
                for (k, v) in &self.env {
                    env.push((k.into(), v.into()));
                }
                for name in &self.pass_env {
                    // Never the value: only the name goes into an error.
                    let value = environ.get(name).ok_or_else(|| {
                        invalid(&location, format!("pass_env names {name:?}, which is not set in bottle-init's environment"))
                    })?;
                    env.push((name.into(), value.clone()));
                }
                if !env.iter().any(|(k, _)| k == "PATH") {
                    env.push((
                        "PATH".into(),
                        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    ));
                }
                ChildStart::Process(ProcessSpec {
                    argv: argv.iter().map(OsString::from).collect(),
                    env,
                    cwd: self.cwd.clone(),
                    readiness: self.readiness()?,
                })
            }
        };
        let mut backoff = Backoff::default();
        if let Some(b) = &self.backoff {
            if let Some(v) = b.initial {
                backoff.initial = seconds(v, &location, "backoff.initial", true)?;
            }
            if let Some(v) = b.factor {
                backoff.factor = v;
            }
            if let Some(v) = b.cap {
                backoff.cap = seconds(v, &location, "backoff.cap", true)?;
            }
            if let Some(v) = b.jitter {
                backoff.jitter = v;
            }
        }
        let mut child = ChildSpec::new(&self.name, start)
            .restart(self.restart)
            .significant(self.significant)
            .stop_timeout(seconds(self.stop_timeout, &location, "stop_timeout", false)?)
            .backoff(backoff)
            .reset_after(seconds(self.reset_after, &location, "reset_after", true)?);
        child.permanent_exit_codes = self.permanent_exit_codes.clone();
        Ok(child)
    }

    fn readiness(&self) -> Result<Readiness> {
        let Some(ready) = &self.ready else { return Ok(Readiness::None) };
        let location = format!("{}.ready", self.location());
        let deadline = seconds(ready.deadline, &location, "deadline", false)?;
        let kinds = usize::from(ready.tcp.is_some())
            + usize::from(ready.unix.is_some())
            + usize::from(ready.notify_fd.is_some())
            + usize::from(ready.sd_notify == Some(true));
        if kinds != 1 {
            return Err(invalid(
                location,
                "set exactly one of tcp, unix, notify_fd, sd_notify = true",
            ));
        }
        if let Some(addr) = &ready.tcp {
            let addr: SocketAddr = addr.parse().map_err(|_| {
                invalid(&location, format!("tcp {addr:?} is not an address like 127.0.0.1:9099"))
            })?;
            return Ok(Readiness::Tcp { addr, deadline });
        }
        if let Some(path) = &ready.unix {
            return Ok(Readiness::Unix { path: path.clone(), deadline });
        }
        if let Some(fd) = ready.notify_fd {
            return Ok(Readiness::NotifyFd { fd, deadline });
        }
        Ok(Readiness::SdNotify { deadline })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<InitConfig> {
        InitConfig::parse(text, Path::new("test.toml"))
    }

    fn spec(text: &str) -> Result<SupervisorSpec> {
        let env: BTreeMap<String, OsString> =
            [("TOKEN".to_string(), OsString::from("s3cr3t"))].into();
        parse(text)?.to_spec(&env, None)
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let err = parse("grace_secs = 3\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown key \"grace_secs\" in the top level; did you mean \"grace_seconds\"?"
        );
        let err = parse("[[daemon]]\nname = \"a\"\ncomand = [\"x\"]\n").unwrap_err().to_string();
        assert!(err.contains("\"comand\"") && err.contains("did you mean \"command\""), "{err}");
        let err =
            parse("[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nready = { tpc = \"1.2.3.4:5\" }\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("did you mean \"tcp\""), "{err}");
        let err = parse("zzzzzz = 1\n").unwrap_err().to_string();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn broken_configs_are_refused_with_a_reason() {
        for (text, needle) in [
            ("[[daemon]]\nname = \"a\"\ncommand = []\n", "command is empty"),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\n[[daemon]]\nname = \"a\"\ncommand = [\"y\"]\n",
                "duplicate daemon name",
            ),
            (
                "[[daemon]]\nname = \"a\"\nbuiltin = \"nope\"\n",
                "unknown builtin \"nope\"; this build has egress",
            ),
            ("[[daemon]]\nname = \"a\"\nbuiltin = \"egress\"\n", "needs a config table"),
            (
                "[[daemon]]\nname = \"a\"\nbuiltin = \"egress\"\n[daemon.config]\nroutes = \"/r.yaml\"\nlisten = \"x\"\n",
                "egress config",
            ),
            ("[[daemon]]\nname = \"a\"\n", "set command"),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = 0\n",
                "stop_timeout must be > 0",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\npass_env = [\"MISSING\"]\n",
                "\"MISSING\"",
            ),
            (
                "usr1_restarts = [\"b\"]\n[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\n",
                "no daemon named \"b\"",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nready = { tcp = \"x\" }\n",
                "not an address",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nready = { deadline = 3 }\n",
                "exactly one",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nreload_signal = \"NOPE\"\n",
                "not a signal",
            ),
            (
                "intensity = { max_restarts = 0, period_seconds = 0 }\n",
                "period_seconds must be > 0",
            ),
            ("[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nrestart = \"sometimes\"\n", "sometimes"),
            ("grace_seconds = -1\n", "grace_seconds"),
            ("this is not toml", "not valid TOML"),
        ] {
            let err = spec(text).map(|_| ()).unwrap_err();
            let chain = format!(
                "{err}: {}",
                std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default()
            );
            assert!(chain.contains(needle), "{text:?}: {chain}");
        }
    }

    #[test]
    fn a_toml_error_never_quotes_the_offending_line() {
        let text = "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nenv = { TOKEN = \"sk-live-secret-value\" \n";
        let err = parse(text).unwrap_err().to_string();
        assert!(!err.contains("sk-live-secret-value"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let typed = "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = \"sk-live-secret-value\"\n";
        let err = parse(typed).unwrap_err().to_string();
        assert!(!err.contains("sk-live-secret-value"), "{err}");
    }

    #[test]
    fn secrets_reach_only_the_daemon_that_lists_them_and_never_an_error() {
        let text = "[[daemon]]\nname = \"egress\"\ncommand = [\"x\"]\npass_env = [\"TOKEN\"]\n[[daemon]]\nname = \"other\"\ncommand = [\"y\"]\n";
        let spec = spec(text).unwrap();
        let env_of = |i: usize| match &spec.children[i].start {
            ChildStart::Process(p) => p.env.clone(),
            _ => unreachable!("process"),
        };
        assert!(env_of(0).contains(&("TOKEN".into(), "s3cr3t".into())));
        assert!(!env_of(1).iter().any(|(k, v)| k == "TOKEN" || v == "s3cr3t"));
        let empty = BTreeMap::new();
        let err = parse(text).unwrap().to_spec(&empty, None).unwrap_err().to_string();
        assert!(err.contains("TOKEN") && !err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn the_daemon_set_can_be_narrowed_and_an_unknown_name_is_refused() {
        let text = "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\n[[daemon]]\nname = \"b\"\ncommand = [\"y\"]\n[[daemon]]\nname = \"c\"\ncommand = [\"z\"]\n";
        let env = BTreeMap::new();
        let config = parse(text).unwrap();
        let spec = config.to_spec(&env, Some("c,a")).unwrap();
        let names: Vec<_> = spec.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"], "config order is kept");
        let err = config.to_spec(&env, Some("a,zz")).unwrap_err().to_string();
        assert!(err.contains("\"zz\""), "{err}");
    }

    #[test]
    fn a_full_daemon_entry_maps_onto_the_spec() {
        let text = r#"
            grace_seconds = 6.5
            strategy = "rest_for_one"
            intensity = { max_restarts = 3, period_seconds = 20 }
            [[daemon]]
            name = "web"
            command = ["/bin/web", "--port", "80"]
            restart = "transient"
            env = { MODE = "x" }
            significant = true
            stop_timeout = 2.5
            permanent_exit_codes = [78, 64]
            reset_after = 30
            ready = { tcp = "127.0.0.1:80", deadline = 4 }
            backoff = { initial = 0.5, factor = 3.0, cap = 10, jitter = 0.0 }
        "#;
        let spec = spec(text).unwrap();
        assert_eq!(spec.strategy, Strategy::RestForOne);
        assert_eq!(spec.intensity.max_restarts, 3);
        let web = &spec.children[0];
        assert_eq!(web.restart, RestartType::Transient);
        assert!(web.significant);
        assert_eq!(web.stop_timeout, Duration::from_millis(2500));
        assert_eq!(web.permanent_exit_codes, vec![78, 64]);
        assert_eq!(web.backoff.initial, Duration::from_millis(500));
        assert_eq!(web.backoff.factor, 3.0);
        match &web.start {
            ChildStart::Process(p) => {
                assert_eq!(
                    p.readiness,
                    Readiness::Tcp {
                        addr: "127.0.0.1:80".parse().unwrap(),
                        deadline: Duration::from_secs(4)
                    }
                );
                assert!(p.env.contains(&("MODE".into(), "x".into())));
                assert!(p.env.iter().any(|(k, _)| k == "PATH"));
            }
            _ => panic!("process expected"),
        }
    }
}
