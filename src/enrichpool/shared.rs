//! Shared pools: every `enrichpool` of the process with the same `shared-pool` name runs
//! its frames on one crew of workers and one set of servers. The first member to start
//! creates the pool with its settings; the others join it (a setting of theirs that
//! differs is warned about, naming both values; other servers or another model are an
//! error); the last to stop stops the workers and closes the servers.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use super::settings::{PoolSettings, RemoteSettings, Settings};
use super::steps::Enricher;
use crate::glue::lock;
use crate::pool::Crew;
use crate::remote::ServerSet;

/// One shared pool.
pub(super) struct SharedPool {
    pub name: String,
    pub crew: Arc<Crew<Enricher>>,
    /// The servers, with `servers` set.
    pub set: Option<Arc<ServerSet>>,
    /// The settings it was created with.
    pub pool: PoolSettings,
    pub remote: RemoteSettings,
    /// Member numbers to element names, for `pool-stats`.
    names: Mutex<HashMap<u64, String>>,
}

impl SharedPool {
    pub fn name_member(&self, member: u64, element: String) {
        lock(&self.names).insert(member, element);
    }

    pub fn forget_member(&self, member: u64) {
        lock(&self.names).remove(&member);
    }

    pub fn member_name(&self, member: u64) -> String {
        lock(&self.names).get(&member).cloned().unwrap_or_default()
    }
}

struct Entry {
    pool: Arc<SharedPool>,
    members: usize,
}

static REGISTRY: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Default::default);

/// A member's pool, with the settings of the member that differ from the pool's.
type Joined = Result<(Arc<SharedPool>, Vec<String>), String>;

/// The shared pool `name`, created with `settings` if it does not exist yet; with the
/// differences between `settings` and the pool's, to warn about. `Err` when `settings`
/// cannot share it (other servers or model), or the pool cannot be created. The registry is
/// not held while a pool starts (it may wait for a server): if another member created the
/// same pool meanwhile, that one is joined and this one stopped.
pub(super) fn acquire(name: &str, settings: &Settings) -> Joined {
    if let Some(joined) = join_existing(name, settings) {
        return joined;
    }
    let crew = Crew::start(settings.pool.crew(), true)?;
    let set = match settings.remote.start_set() {
        Ok(set) => set,
        Err(err) => {
            crew.stop(Duration::ZERO);
            return Err(err);
        }
    };
    let pool = Arc::new(SharedPool {
        name: name.to_string(),
        crew,
        set,
        pool: settings.pool.clone(),
        remote: settings.remote.clone(),
        names: Mutex::new(HashMap::new()),
    });
    let raced = {
        let mut registry = lock(&REGISTRY);
        if registry.contains_key(name) {
            true
        } else {
            registry.insert(
                name.to_string(),
                Entry {
                    pool: pool.clone(),
                    members: 1,
                },
            );
            false
        }
    };
    if !raced {
        return Ok((pool, Vec::new()));
    }
    if let Some(set) = &pool.set {
        set.close();
    }
    pool.crew.stop(Duration::ZERO);
    join_existing(name, settings).unwrap_or_else(|| acquire(name, settings))
}

/// Joins the shared pool `name` if it exists.
fn join_existing(name: &str, settings: &Settings) -> Option<Joined> {
    let mut registry = lock(&REGISTRY);
    let entry = registry.get_mut(name)?;
    let pool = &entry.pool;
    let mut differences = settings.pool.crew_differences(&pool.pool);
    match settings.remote.differences(&pool.remote) {
        Ok(more) => differences.extend(more),
        Err(err) => return Some(Err(err)),
    }
    let warnings = differences
        .into_iter()
        .map(|(property, theirs, ours)| {
            format!(
                "{property}={ours} differs from shared pool `{name}`'s {property}={theirs}; \
                 the pool's value is used (set it alike on every member)"
            )
        })
        .collect();
    entry.members += 1;
    Some(Ok((pool.clone(), warnings)))
}

/// A member is done with `pool`. The last one stops its workers (waiting up to `grace` for
/// those busy) and closes its servers; returns how many workers were left behind then.
pub(super) fn release(pool: &Arc<SharedPool>, grace: Duration) -> usize {
    let last = {
        let mut registry = lock(&REGISTRY);
        match registry.get_mut(&pool.name) {
            Some(entry) if Arc::ptr_eq(&entry.pool, pool) => {
                entry.members -= 1;
                let last = entry.members == 0;
                if last {
                    registry.remove(&pool.name);
                }
                last
            }
            _ => false,
        }
    };
    if !last {
        return 0;
    }
    if let Some(set) = &pool.set {
        set.close();
    }
    pool.crew.stop(grace)
}
