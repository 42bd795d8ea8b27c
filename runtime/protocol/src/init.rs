//! bottle-init's configuration: the daemons it supervises, the builtins among them with
//! their own settings, and where the secrets come from.
//!
//! Hazard: this is the one schema. The launcher renders it ([`InitConfig::to_toml`]),
//! bottle-init reads it ([`InitConfig::from_toml`]); a key either end misspells is an
//! error naming its path with the closest valid key, derived from these types. A
//! daemon's `env` may hold secret values: [`DaemonConfig`]'s `Debug` prints the names.
//! Checks that need more than the shape (one of `command` or `builtin`, durations > 0,
//! names that resolve) belong to bottle-init's validation into a supervision spec.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use bottle_runtime::policy::{RestartType, Strategy};
use serde::{Deserialize, Serialize};

use crate::ProtocolError;
use crate::egress::EgressSettings;
use crate::git_gate::GitGateSettings;

/// The whole `bottle-init` configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Grace budget in seconds from the first SIGTERM to exit (default 8).
    #[serde(default = "default_grace")]
    pub grace_seconds: f64,
    /// The control socket (default `/run/bottle-init/control.sock`; empty disables it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// Where the JSON exit report ([`crate::exit::ExitReport`]) is written at exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_report: Option<PathBuf>,
    /// The root supervisor's restart strategy (default `one_for_one`).
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    /// The root's restart budget (default 5 restarts in 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity: Option<IntensityConfig>,
    /// Daemons restarted on SIGUSR1, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usr1_restarts: Vec<String>,
    /// Where the values of the secrets builtins refer to come from (default `env`).
    #[serde(default)]
    pub secrets: SecretsSource,
    /// The daemons, started in this order and stopped in reverse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daemon: Vec<DaemonConfig>,
}

impl Default for InitConfig {
    fn default() -> InitConfig {
        InitConfig {
            grace_seconds: default_grace(),
            control_socket: None,
            exit_report: None,
            strategy: default_strategy(),
            intensity: None,
            usr1_restarts: Vec::new(),
            secrets: SecretsSource::default(),
            daemon: Vec::new(),
        }
    }
}

impl InitConfig {
    /// Reads a configuration from TOML text. Errors name the key path and suggest the
    /// closest valid key; none quotes a value or the source line.
    pub fn from_toml(text: &str) -> Result<InitConfig, ProtocolError> {
        crate::schema::from_toml(text)
    }

    /// Renders the configuration as TOML that [`InitConfig::from_toml`] reads back
    /// unchanged. The text holds `env` values as given: write it where only bottle-init
    /// reads it, and keep secrets out of `env` (use [`SecretsSource::Fd`]).
    pub fn to_toml(&self) -> Result<String, ProtocolError> {
        crate::schema::to_toml(self)
    }
}

/// Where bottle-init takes the secret values that builtins look up by name (a route's
/// `token_ref`). Resolved once at start and handed to the builtins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretsSource {
    /// bottle-init's own environment, read by the binary at start.
    #[default]
    Env,
    /// A JSON [`crate::secrets::Secrets`] map read once from this inherited file
    /// descriptor (a pipe the launcher writes and closes), which is then closed.
    Fd(i32),
}

/// The root supervisor's restart budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntensityConfig {
    /// Restarts allowed within the period before the root gives up.
    pub max_restarts: u32,
    /// The period, in seconds (> 0).
    pub period_seconds: f64,
}

/// One supervised daemon: a program (`command`) or an in-process actor (`builtin`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Unique name: the child's name in status, logs and `ctl restart`.
    pub name: String,
    /// The argv to execute (no shell). Exactly one of `command` and `builtin` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// An in-process daemon with its settings, as `[daemon.builtin.<name>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Builtin>,
    /// When to restart: `permanent` (default), `transient` or `temporary`.
    #[serde(default = "default_restart")]
    pub restart: RestartType,
    /// Environment set for a command daemon (its whole environment, with `pass_env`
    /// and a default `PATH`). Values may be secret: `Debug` prints the names only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables copied from bottle-init's environment into a command daemon's, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
    /// Working directory of a command daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Whether this daemon's ending ends the whole tree (and sets the exit code).
    #[serde(default)]
    pub significant: bool,
    /// Seconds between SIGTERM and SIGKILL when stopping it (> 0, default 5).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: f64,
    /// Exit codes that mean "do not restart" (default `[78]`, EX_CONFIG).
    #[serde(default = "default_permanent_codes")]
    pub permanent_exit_codes: Vec<i32>,
    /// Signal sent to its process group on reload (`HUP`, `USR2`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_signal: Option<String>,
    /// How a command daemon shows it is ready (default: as soon as it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyConfig>,
    /// Delay between restarts (default: the runtime's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffConfig>,
    /// Seconds of uptime after which the backoff starts over (>= 0, default 10).
    #[serde(default = "default_reset_after")]
    pub reset_after: f64,
}

impl DaemonConfig {
    /// A daemon that runs `argv`, every other field at its default.
    pub fn command(name: impl Into<String>, argv: Vec<String>) -> DaemonConfig {
        DaemonConfig { command: Some(argv), ..DaemonConfig::empty(name.into()) }
    }

    /// An in-process daemon, every other field at its default.
    pub fn builtin(name: impl Into<String>, builtin: Builtin) -> DaemonConfig {
        DaemonConfig { builtin: Some(builtin), ..DaemonConfig::empty(name.into()) }
    }

    fn empty(name: String) -> DaemonConfig {
        DaemonConfig {
            name,
            command: None,
            builtin: None,
            restart: default_restart(),
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            cwd: None,
            significant: false,
            stop_timeout: default_stop_timeout(),
            permanent_exit_codes: default_permanent_codes(),
            reload_signal: None,
            ready: None,
            backoff: None,
            reset_after: default_reset_after(),
        }
    }
}

/// Names only: `env` values may be secrets.
impl fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("builtin", &self.builtin)
            .field("restart", &self.restart)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("pass_env", &self.pass_env)
            .field("cwd", &self.cwd)
            .field("significant", &self.significant)
            .field("stop_timeout", &self.stop_timeout)
            .field("permanent_exit_codes", &self.permanent_exit_codes)
            .field("reload_signal", &self.reload_signal)
            .field("ready", &self.ready)
            .field("backoff", &self.backoff)
            .field("reset_after", &self.reset_after)
            .finish()
    }
}

/// The in-process daemons, each with its own settings table. A build without one of
/// them refuses its variant at start with a clear error; none is a silent no-op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    /// The egress proxy (`[daemon.builtin.egress]`).
    Egress(EgressSettings),
    /// The git gate (`[daemon.builtin.git-gate]`).
    GitGate(GitGateSettings),
    /// The supervise server (`[daemon.builtin.supervise]`).
    Supervise(SuperviseSettings),
}

impl Builtin {
    /// The builtin's name as written in the config (`egress`, `git-gate`, `supervise`).
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Egress(_) => "egress",
            Builtin::GitGate(_) => "git-gate",
            Builtin::Supervise(_) => "supervise",
        }
    }
}

/// The supervise server's settings. Not implemented yet: its keys are added with it, and
/// until then any key is unknown and bottle-init refuses the builtin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseSettings {}

/// How a command daemon shows it is ready: exactly one of `tcp`, `unix`, `notify_fd`,
/// `sd_notify = true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyConfig {
    /// Ready once this address (`127.0.0.1:9099`) accepts a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Ready once this unix socket accepts a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix: Option<PathBuf>,
    /// Ready once the daemon writes a line to this file descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_fd: Option<i32>,
    /// Ready once the daemon sends `READY=1` to `$NOTIFY_SOCKET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sd_notify: Option<bool>,
    /// Seconds to wait before the start counts as failed (> 0, default 10).
    #[serde(default = "default_ready_deadline")]
    pub deadline: f64,
}

/// Delay between restarts; unset keys keep the runtime's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First delay, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<f64>,
    /// Growth factor per restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Longest delay, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<f64>,
    /// Random spread, as a fraction of the delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::Listen;

    fn error(text: &str) -> String {
        InitConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_name_their_path_and_the_closest_key_from_the_types() {
        assert_eq!(
            error("grace_secs = 3\n"),
            "unknown key `grace_secs`; did you mean `grace_seconds`?"
        );
        assert_eq!(
            error("[[daemon]]\nname = \"a\"\n[[daemon]]\nname = \"b\"\ncomand = [\"x\"]\n"),
            "unknown key `daemon[1].comand`; did you mean `command`?"
        );
        assert_eq!(
            error("[[daemon]]\nname = \"a\"\nready = { tpc = \"1.2.3.4:5\" }\n"),
            "unknown key `daemon[0].ready.tpc`; did you mean `tcp`?"
        );
        assert_eq!(error("zzzzzz = 1\n"), "unknown key `zzzzzz`");
    }

    #[test]
    fn builtin_tables_get_the_same_errors_as_daemons() {
        let text =
            "[[daemon]]\nname = \"e\"\n[daemon.builtin.egress]\nroutes = \"/r\"\nlistn = 1\n";
        assert_eq!(
            error(text),
            "unknown key `daemon[0].builtin.egress.listn`; did you mean `listen`?"
        );
        let text = "[[daemon]]\nname = \"e\"\n[daemon.builtin.egres]\nroutes = \"/r\"\n";
        assert_eq!(
            error(text),
            "`daemon[0].builtin` is not one of `egress`, `git-gate`, `supervise`; did you mean `egress`?"
        );
        let text = "[[daemon]]\nname = \"e\"\n[daemon.builtin.git-gate.repos.r]\nulr = \"x\"\n";
        assert_eq!(
            error(text),
            "unknown key `daemon[0].builtin.git-gate.repos.r.ulr`; did you mean `url`?"
        );
        let text = "[[daemon]]\nname = \"e\"\nbuiltin = \"egress\"\n";
        assert_eq!(
            error(text),
            "`daemon[0].builtin.egress`: needs its settings as a table, not a bare name"
        );
    }

    #[test]
    fn no_error_quotes_a_value_or_the_source_line() {
        let secret = "sk-live-secret-value";
        for text in [
            format!("[[daemon]]\nname = \"a\"\nenv = {{ TOKEN = \"{secret}\" \n"),
            format!("[[daemon]]\nname = \"a\"\nstop_timeout = \"{secret}\"\n"),
            format!("[[daemon]]\nname = \"a\"\nrestart = \"{secret}\"\n"),
            format!(
                "[[daemon]]\nname = \"a\"\n[daemon.builtin.egress]\nroutes = \"/r\"\nlisten = {{ addr = \"{secret}\" }}\n"
            ),
            format!("[[daemon]]\nname = \"a\"\nenv = {{ TOKEN = 3 }}\nx = \"{secret}\"\n"),
        ] {
            let err = error(&text);
            assert!(!err.contains(secret), "{text:?}: {err}");
            assert!(err.contains("daemon[0]") || err.contains("line 3"), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_syntax_error_has_its_position() {
        let err =
            error("[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nenv = { TOKEN = \"sk-live\" \n");
        assert!(err.starts_with("not valid TOML:") && err.contains("line 4"), "{err}");
        assert!(!err.contains("sk-live"), "{err}");
    }

    #[test]
    fn a_rendered_config_reads_back_unchanged() {
        let mut egress = EgressSettings::new("/etc/bottle/routes.yaml");
        egress.listen = Listen::Fd(3);
        egress.ca_out = Some("/run/bottle/ca".into());
        let mut web =
            DaemonConfig::command("web", vec!["/bin/web".into(), "--port".into(), "80".into()]);
        web.env.insert("MODE".into(), "x".into());
        web.ready = Some(ReadyConfig {
            tcp: Some("127.0.0.1:80".into()),
            unix: None,
            notify_fd: None,
            sd_notify: None,
            deadline: 4.0,
        });
        web.backoff = Some(BackoffConfig { initial: Some(0.5), ..BackoffConfig::default() });
        web.restart = RestartType::Transient;
        let config = InitConfig {
            grace_seconds: 6.5,
            control_socket: Some("/run/ctl.sock".into()),
            strategy: Strategy::RestForOne,
            intensity: Some(IntensityConfig { max_restarts: 3, period_seconds: 20.0 }),
            usr1_restarts: vec!["web".into()],
            secrets: SecretsSource::Fd(4),
            daemon: vec![DaemonConfig::builtin("egress", Builtin::Egress(egress)), web],
            ..InitConfig::default()
        };
        let text = config.to_toml().unwrap();
        assert_eq!(InitConfig::from_toml(&text).unwrap(), config, "{text}");
        assert_eq!(InitConfig::from_toml("").unwrap(), InitConfig::default());
    }

    #[test]
    fn debug_of_a_daemon_prints_env_names_never_values() {
        let mut daemon = DaemonConfig::command("a", vec!["x".into()]);
        daemon.env.insert("GITHUB_TOKEN".into(), "ghp_do_not_print_me".into());
        let shown = format!(
            "{daemon:?} {:?}",
            InitConfig { daemon: vec![daemon.clone()], ..InitConfig::default() }
        );
        assert!(shown.contains("GITHUB_TOKEN"), "{shown}");
        assert!(!shown.contains("ghp_do_not_print_me"), "{shown}");
    }
}
