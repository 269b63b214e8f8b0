//! The enrichpool's settings: the pool's (workers, queue, policies, sharing), the remote
//! step's (servers, model, requests, batching) and the element's own (latency, overlay,
//! stats), with their defaults.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use gst::glib;

use super::regions::{DEFAULT_MAX_ROIS, InferOn};
use super::remote::Remote;
use super::steps::RegionPlan;
use crate::pool::{self, CrewConfig, Limits, MemberConfig, PoolConfig};
use crate::remote::{self as rpc, ServerSet};

/// What a full queue does.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstEnrichPoolLeaky")]
pub enum Leaky {
    #[enum_value(name = "None: upstream waits for room (backpressure)", nick = "none")]
    None = 0,
    #[enum_value(name = "Upstream: the new frame is dropped", nick = "upstream")]
    Upstream = 1,
    #[enum_value(
        name = "Downstream: the oldest queued frame is dropped",
        nick = "downstream"
    )]
    Downstream = 2,
}

/// What a failed attempt leads to.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstEnrichPoolOnError")]
pub enum OnError {
    #[enum_value(
        name = "Retry: up to `retries` more attempts, then a gap",
        nick = "retry"
    )]
    Retry = 0,
    #[enum_value(name = "Drop: the frame becomes a gap at once", nick = "drop")]
    Drop = 1,
    #[enum_value(
        name = "Fail: the frame becomes a gap and an error is posted",
        nick = "fail"
    )]
    Fail = 2,
}

pub(super) const DEFAULT_MAX_WORKERS: u32 = 0;
pub(super) const DEFAULT_IDLE_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(5);
pub(super) const DEFAULT_MAX_SIZE_BUFFERS: u32 = 30;
pub(super) const DEFAULT_MAX_SIZE_BYTES: u64 = 0;
pub(super) const DEFAULT_MAX_SIZE_TIME: gst::ClockTime = gst::ClockTime::ZERO;
pub(super) const DEFAULT_LEAKY: Leaky = Leaky::None;
pub(super) const DEFAULT_TIMEOUT: gst::ClockTime = gst::ClockTime::ZERO;
pub(super) const DEFAULT_ON_ERROR: OnError = OnError::Retry;
pub(super) const DEFAULT_RETRIES: u32 = 2;
pub(super) const DEFAULT_MAX_IN_FLIGHT: u32 = 0;
pub(super) const DEFAULT_PRIORITY: u32 = 1;
pub(super) const DEFAULT_LATENCY: i64 = -1;
pub(super) const DEFAULT_OVERLAY: bool = false;
pub(super) const DEFAULT_STATS_INTERVAL: gst::ClockTime = gst::ClockTime::ZERO;
pub(super) const DEFAULT_REQUEST_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(5);
pub(super) const DEFAULT_HEDGE_AFTER: gst::ClockTime = gst::ClockTime::ZERO;
pub(super) const DEFAULT_MAX_IN_FLIGHT_PER_SERVER: u32 = 0;
pub(super) const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 << 20;
pub(super) const DEFAULT_INTERVAL: u32 = 1;
pub(super) const DEFAULT_BATCH_SIZE: u32 = 1;
pub(super) const DEFAULT_BATCH_TIMEOUT: gst::ClockTime = gst::ClockTime::from_mseconds(5);

/// With `batch-size` above 1, how long starting waits for a server to tell whether its model
/// has a batch dimension.
const BATCH_CHECK_WAIT: Duration = Duration::from_secs(2);

/// Worker threads started by default: one per CPU core.
pub(super) fn default_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn duration(t: gst::ClockTime) -> Duration {
    Duration::from_nanos(t.nseconds())
}

/// `None` for zero, the "no bound" of the properties.
fn bound(t: gst::ClockTime) -> Option<Duration> {
    (t > gst::ClockTime::ZERO).then(|| duration(t))
}

/// The pool's settings: its crew of workers (shared under `shared-pool`) and this
/// element's queue and policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PoolSettings {
    /// Empty: a private pool.
    pub shared_pool: String,
    pub workers: u32,
    pub max_workers: u32,
    pub idle_timeout: gst::ClockTime,
    pub max_size_buffers: u32,
    pub max_size_bytes: u64,
    pub max_size_time: gst::ClockTime,
    pub leaky: Leaky,
    pub timeout: gst::ClockTime,
    pub on_error: OnError,
    pub retries: u32,
    pub max_in_flight: u32,
    pub priority: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            shared_pool: String::new(),
            workers: default_workers(),
            max_workers: DEFAULT_MAX_WORKERS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_size_buffers: DEFAULT_MAX_SIZE_BUFFERS,
            max_size_bytes: DEFAULT_MAX_SIZE_BYTES,
            max_size_time: DEFAULT_MAX_SIZE_TIME,
            leaky: DEFAULT_LEAKY,
            timeout: DEFAULT_TIMEOUT,
            on_error: DEFAULT_ON_ERROR,
            retries: DEFAULT_RETRIES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            priority: DEFAULT_PRIORITY,
        }
    }
}

impl PoolSettings {
    pub fn crew(&self) -> CrewConfig {
        CrewConfig {
            workers: self.workers.max(1) as usize,
            max_workers: self.max_workers as usize,
            idle_timeout: duration(self.idle_timeout),
        }
    }

    pub fn member(&self) -> MemberConfig {
        MemberConfig {
            limits: Limits {
                max_buffers: self.max_size_buffers as u64,
                max_bytes: self.max_size_bytes,
                max_time: self.max_size_time.nseconds(),
            },
            leaky: match self.leaky {
                Leaky::None => pool::Leaky::None,
                Leaky::Upstream => pool::Leaky::Upstream,
                Leaky::Downstream => pool::Leaky::Downstream,
            },
            timeout: bound(self.timeout),
            on_error: match self.on_error {
                OnError::Retry => pool::OnError::Retry,
                OnError::Drop => pool::OnError::Drop,
                OnError::Fail => pool::OnError::Fail,
            },
            retries: self.retries,
            max_in_flight: self.max_in_flight as usize,
            priority: self.priority.max(1),
        }
    }

    /// A private pool's configuration.
    pub fn private(&self) -> PoolConfig {
        let crew = self.crew();
        let member = self.member();
        PoolConfig {
            workers: crew.workers,
            max_workers: crew.max_workers,
            idle_timeout: crew.idle_timeout,
            limits: member.limits,
            leaky: member.leaky,
            timeout: member.timeout,
            on_error: member.on_error,
            retries: member.retries,
            max_in_flight: member.max_in_flight,
        }
    }

    /// How far out of order this element's output can be before it starts.
    pub fn disorder(&self) -> u64 {
        self.member().disorder(self.crew().most_workers())
    }

    /// The crew settings in which `self` (a member joining) differs from the pool's
    /// (`pool`).
    pub fn crew_differences(&self, pool: &PoolSettings) -> Differences {
        let mut out = Differences::new();
        differ(&mut out, "workers", pool, self, |s| s.workers.to_string());
        differ(&mut out, "max-workers", pool, self, |s| {
            s.max_workers.to_string()
        });
        differ(&mut out, "idle-timeout", pool, self, |s| ns(s.idle_timeout));
        out
    }
}

/// Settings in which a member joining a shared pool differs from the pool, as `(property,
/// the pool's value, the member's)`.
pub(super) type Differences = Vec<(&'static str, String, String)>;

/// Adds `name` to `out` when `value` of the pool's settings and of the member's differ.
fn differ<S>(
    out: &mut Differences,
    name: &'static str,
    pool: &S,
    member: &S,
    value: impl Fn(&S) -> String,
) {
    let (theirs, ours) = (value(pool), value(member));
    if theirs != ours {
        out.push((name, theirs, ours));
    }
}

/// A duration as its property shows it, in nanoseconds.
fn ns(t: gst::ClockTime) -> String {
    t.nseconds().to_string()
}

/// The remote step's settings (shared under `shared-pool`, but for `interval` and
/// `only-label`, which choose this element's frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RemoteSettings {
    pub servers: String,
    pub model: String,
    pub model_version: String,
    pub request_timeout: gst::ClockTime,
    pub hedge_after: gst::ClockTime,
    pub max_in_flight_per_server: u32,
    /// Never logged, never in stats, not readable as a property.
    pub auth_token: Option<String>,
    /// A file holding the token, read at start (its content never logged).
    pub auth_token_file: Option<String>,
    pub max_response_bytes: u64,
    pub tls_ca_file: Option<String>,
    pub batch_size: u32,
    pub batch_timeout: gst::ClockTime,
    pub interval: u32,
    pub only_label: Option<String>,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings {
            servers: String::new(),
            model: String::new(),
            model_version: String::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            hedge_after: DEFAULT_HEDGE_AFTER,
            max_in_flight_per_server: DEFAULT_MAX_IN_FLIGHT_PER_SERVER,
            auth_token: None,
            auth_token_file: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            tls_ca_file: None,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
            interval: DEFAULT_INTERVAL,
            only_label: None,
        }
    }
}

impl RemoteSettings {
    /// The token from `auth-token` or `auth-token-file`.
    fn token(&self) -> Result<Option<String>, String> {
        match (&self.auth_token, &self.auth_token_file) {
            (Some(_), Some(_)) => Err("set auth-token or auth-token-file, not both".into()),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(path)) => read_token_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The server set, or `None` without `servers`. Errors are configuration errors.
    pub fn start_set(&self) -> Result<Option<Arc<ServerSet>>, String> {
        let servers = rpc::Endpoint::parse_list(&self.servers)?;
        if servers.is_empty() {
            return Ok(None);
        }
        let extra_roots_pem = match &self.tls_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|err| format!("reading tls-ca-file `{path}`: {err}"))?,
            ),
            None => None,
        };
        let set = ServerSet::start(rpc::Config {
            servers,
            model: self.model.clone(),
            model_version: self.model_version.clone(),
            request_timeout: duration(self.request_timeout),
            hedge_after: bound(self.hedge_after),
            max_in_flight: self.max_in_flight_per_server as usize,
            auth_token: self.token()?,
            max_response_bytes: self.max_response_bytes.try_into().unwrap_or(usize::MAX),
            extra_roots_pem,
            batch_size: self.batch_size.max(1) as usize,
            batch_timeout: duration(self.batch_timeout),
        })?;
        // A model without a batch dimension is told now, when a server answers in time.
        set.check_batching(duration(self.request_timeout).min(BATCH_CHECK_WAIT))?;
        Ok(Some(Arc::new(set)))
    }

    /// This element's remote step on `set` (its own or its shared pool's).
    pub fn step(&self, set: Arc<ServerSet>) -> Remote {
        Remote {
            set,
            canceller: Arc::new(rpc::Canceller::default()),
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Where `self` (a member joining) differs from the shared pool's remote settings
    /// (`pool`): `Err` for what cannot be shared (other servers or another model), else
    /// the differences the pool's values win, as `(property, pool's, member's)`.
    pub fn differences(&self, pool: &RemoteSettings) -> Result<Differences, String> {
        if self.servers.trim() != pool.servers.trim() || self.model != pool.model {
            return Err(format!(
                "servers `{}` and model `{}` differ from the shared pool's (servers `{}`, model \
                 `{}`): one pool serves one model on one set of servers",
                self.servers, self.model, pool.servers, pool.model
            ));
        }
        let mut out = Differences::new();
        let text = |t: &Option<String>| t.clone().unwrap_or_default();
        differ(&mut out, "model-version", pool, self, |s| {
            s.model_version.clone()
        });
        differ(&mut out, "request-timeout", pool, self, |s| {
            ns(s.request_timeout)
        });
        differ(&mut out, "hedge-after", pool, self, |s| ns(s.hedge_after));
        differ(&mut out, "max-in-flight-per-server", pool, self, |s| {
            s.max_in_flight_per_server.to_string()
        });
        differ(&mut out, "max-response-bytes", pool, self, |s| {
            s.max_response_bytes.to_string()
        });
        differ(&mut out, "tls-ca-file", pool, self, |s| {
            text(&s.tls_ca_file)
        });
        differ(&mut out, "auth-token-file", pool, self, |s| {
            text(&s.auth_token_file)
        });
        if self.auth_token != pool.auth_token {
            // The values themselves are never shown.
            let theirs = pool.auth_token.as_ref().map_or("(unset)", |_| "(set)");
            out.push(("auth-token", theirs.into(), "(another)".into()));
        }
        differ(&mut out, "batch-size", pool, self, |s| {
            s.batch_size.to_string()
        });
        differ(&mut out, "batch-timeout", pool, self, |s| {
            ns(s.batch_timeout)
        });
        Ok(out)
    }
}

pub(super) const DEFAULT_CARRY_FORWARD: gst::ClockTime = gst::ClockTime::ZERO;

/// What the steps run on and what is reused: `infer-on`, `roi-types`, `max-rois`,
/// `carry-forward` (this element's own, also in a shared pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CascadeSettings {
    pub infer_on: InferOn,
    /// Comma-separated; empty for every type.
    pub roi_types: String,
    pub max_rois: u32,
    pub carry_forward: gst::ClockTime,
}

impl Default for CascadeSettings {
    fn default() -> Self {
        CascadeSettings {
            infer_on: InferOn::Frame,
            roi_types: String::new(),
            max_rois: DEFAULT_MAX_ROIS,
            carry_forward: DEFAULT_CARRY_FORWARD,
        }
    }
}

impl CascadeSettings {
    /// How `infer-on=rois` runs (`None` for `frame`), under the pool's error policy.
    pub fn plan(&self, pool: &PoolSettings) -> Option<RegionPlan> {
        (self.infer_on == InferOn::Rois).then(|| RegionPlan {
            types: self
                .roi_types
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
            max: self.max_rois.max(1) as usize,
            attempts: match pool.on_error {
                OnError::Retry => pool.retries.saturating_add(1),
                OnError::Drop | OnError::Fail => 1,
            },
            fail: pool.on_error == OnError::Fail,
        })
    }
}

/// All of an element's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    pub pool: PoolSettings,
    pub remote: RemoteSettings,
    pub cascade: CascadeSettings,
    /// Processing latency for the LATENCY query, in ns (-1: measured).
    pub latency: i64,
    pub overlay: bool,
    pub stats_interval: gst::ClockTime,
    /// `worker-bin`: a gst-launch description; empty for none.
    pub worker_bin: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pool: PoolSettings::default(),
            remote: RemoteSettings::default(),
            cascade: CascadeSettings::default(),
            latency: DEFAULT_LATENCY,
            overlay: DEFAULT_OVERLAY,
            stats_interval: DEFAULT_STATS_INTERVAL,
            worker_bin: String::new(),
        }
    }
}

/// The most a token file may hold.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Reads a token file: its content, without surrounding whitespace. Opened once, then checked
/// and read through that one handle: it must be a regular file that other users can neither
/// read nor write, not empty, at most 64 KiB of UTF-8. No error message holds any of its
/// content.
fn read_token_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let reading = |err: std::io::Error| format!("reading auth-token-file `{path}`: {err}");
    let file = std::fs::File::open(path).map_err(reading)?;
    let meta = file.metadata().map_err(reading)?;
    if !meta.is_file() {
        return Err(format!("auth-token-file `{path}` is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        return Err(format!(
            "auth-token-file `{path}` is open to every user (mode {mode:o}); make it \
             private (chmod 600)"
        ));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "auth-token-file `{path}` is larger than {MAX_TOKEN_FILE_BYTES} bytes"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(reading)?;
    let token = String::from_utf8(bytes)
        .map_err(|_| format!("auth-token-file `{path}` is not UTF-8 text"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("auth-token-file `{path}` is empty"));
    }
    Ok(token.to_string())
}
