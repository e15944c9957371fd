//! The push groups and the rules between them, in memory and without IO:
//! one [`Store`] owned by the committer, which applies each request in the
//! order received, stages the changes of a batch, and publishes them to
//! readers only once they are on disk ([`Store::publish`]) or drops them
//! if the write failed ([`Store::abort`]).
//!
//! No request re-checks the whole store: a name index (name -> type and
//! how many groups hold it) answers the type-conflict rule in time
//! proportional to the push, and running totals answer the limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tether_model::{Label, MetricFamily, MetricType, Series, TargetLabels, Value};

use super::body::{PUSH_FAILURE_TIME, PUSH_TIME, Prepared};
use super::key::GroupingKey;
use super::refusal::{Reason, Refusal};
use crate::view::{Drops, Families, Origin};

/// One push group, as served and stored.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) key: GroupingKey,
    /// The grouping key as the labels added to every series.
    pub(crate) target: Arc<TargetLabels>,
    /// What was pushed, normalized; the key's labels are in `target`.
    pub(crate) body: Arc<Families>,
    /// `push_time_seconds` and `push_failure_time_seconds`.
    pub(crate) times: Arc<Families>,
    /// Unix seconds of the last successful push; 0 if none.
    pub(crate) push_time: f64,
    /// Unix seconds of the last failed push; 0 if none.
    pub(crate) failure_time: f64,
    /// Unix milliseconds after which the group is gone; 0 = never.
    pub(crate) expires_at_ms: u64,
    /// When each family was last pushed (Unix seconds), by name, sorted.
    pub(crate) family_times: Vec<(String, f64)>,
}

impl Group {
    /// A group from its parts; `body` normalized with `target`.
    pub(crate) fn new(
        key: GroupingKey,
        target: Arc<TargetLabels>,
        body: Families,
        push_time: f64,
        failure_time: f64,
        expires_at_ms: u64,
        family_times: Vec<(String, f64)>,
    ) -> Group {
        let times = Arc::new(time_families(&target, push_time, failure_time));
        Group {
            key,
            target,
            body: Arc::new(body),
            times,
            push_time,
            failure_time,
            expires_at_ms,
            family_times,
        }
    }

    /// Whether the last change of the group succeeded.
    pub(crate) fn last_push_successful(&self) -> bool {
        self.push_time >= self.failure_time
    }

    /// Whether the group is gone at `now_ms`.
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }

    /// When the family `name` was last pushed.
    pub(crate) fn family_time(&self, name: &str) -> f64 {
        self.family_times
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or(self.push_time, |index| self.family_times[index].1)
    }

    fn with_failure(&self, now: f64) -> Group {
        let mut group = self.clone();
        group.failure_time = now;
        group.times = Arc::new(time_families(&group.target, group.push_time, now));
        group
    }
}

/// The two gauges the Pushgateway adds to every group.
fn time_families(target: &TargetLabels, push_time: f64, failure_time: f64) -> Families {
    let labels = if target.labels().iter().any(|l| l.name == "instance") {
        Vec::new()
    } else {
        vec![Label::new("instance", "")]
    };
    let gauge = |name: &str, help: &str, value: f64| {
        let mut family = MetricFamily::new(name, MetricType::Gauge);
        family.help = Some(help.to_owned());
        family.series.push(Series {
            labels: labels.clone(),
            value: Value::Single(value),
            timestamp_ms: None,
        });
        family
    };
    let families = vec![
        gauge(
            PUSH_FAILURE_TIME,
            "Last Unix time when changing this group in the Pushgateway failed.",
            failure_time,
        ),
        gauge(
            PUSH_TIME,
            "Last Unix time when changing this group in the Pushgateway succeeded.",
            push_time,
        ),
    ];
    Families::normalize(families, Some(target), Origin::Peer, &mut Drops::default())
}

/// How a push changes its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `PUT`: the body replaces the group.
    Replace,
    /// `POST`: the body replaces the families it names.
    Names,
}

/// One request, as the committer applies it.
#[derive(Debug)]
pub(crate) enum Change {
    Push {
        key: GroupingKey,
        prepared: Prepared,
        mode: Mode,
        /// Add counters and histograms into the stored group.
        aggregate: bool,
        /// 0 = never.
        expires_at_ms: u64,
    },
    /// A push refused for an inconsistency: its failure time is recorded
    /// (a group it creates expires at `expires_at_ms`, 0 = never).
    Fail {
        key: GroupingKey,
        expires_at_ms: u64,
    },
    Delete {
        key: GroupingKey,
    },
    Wipe,
    /// Drops every group (and agent's final push) expired at the change's time.
    Expire,
    /// Keeps an agent's final push: `row` under `id` until `expires_at_ms`.
    KeepFinal {
        id: Vec<u8>,
        row: Vec<u8>,
        expires_at_ms: u64,
    },
}

/// The limits across groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreLimits {
    pub(crate) max_groups: usize,
    pub(crate) max_series: usize,
    /// Estimated bytes of every group's families (`Families::approx_bytes`).
    pub(crate) max_bytes: usize,
}

/// How many groups hold a family of one name, and its type.
#[derive(Debug, Clone, Copy)]
struct NameEntry {
    metric_type: MetricType,
    n_groups: usize,
}

/// The groups readers see: only what is on disk.
pub(crate) type Published = Arc<Mutex<BTreeMap<GroupingKey, Arc<Group>>>>;

/// The groups and their index, owned by the committer.
#[derive(Debug)]
pub(crate) struct Store {
    /// A short lock: readers clone the `Arc`s they serve, the committer
    /// applies a batch's few changes; nothing is done under it but that.
    published: Published,
    /// Changes of the batch in progress; `None` is a deletion.
    staged: BTreeMap<GroupingKey, Option<Arc<Group>>>,
    /// The batch wiped everything before its staged changes.
    wiped: bool,
    /// Of the published groups with the staged changes applied.
    names: HashMap<String, NameEntry>,
    n_series: usize,
    n_groups: usize,
    n_bytes: usize,
    limits: StoreLimits,
    /// Agents' final pushes on disk, by id, with their expiry (Unix ms).
    finals: BTreeMap<Vec<u8>, u64>,
    /// Final-push rows of the batch: written (`Some`) or deleted.
    staged_finals: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What the disk must write for a batch.
#[derive(Debug)]
pub(crate) struct Pending<'a> {
    /// Delete every row first.
    pub(crate) wiped: bool,
    /// Rows to write (`Some`) or delete (`None`).
    pub(crate) changes: Vec<(&'a GroupingKey, Option<&'a Group>)>,
    /// Agents' final-push rows to write or delete.
    pub(crate) finals: &'a [(Vec<u8>, Option<Vec<u8>>)],
}

impl Store {
    /// A store holding `groups`, published.
    #[cfg(test)]
    pub(crate) fn new(groups: Vec<Group>, limits: StoreLimits) -> Store {
        Store::with_finals(groups, BTreeMap::new(), limits)
    }

    /// A store holding `groups` and agents' final pushes `finals` (id to
    /// expiry), as loaded from disk.
    pub(crate) fn with_finals(
        groups: Vec<Group>,
        finals: BTreeMap<Vec<u8>, u64>,
        limits: StoreLimits,
    ) -> Store {
        let map: BTreeMap<GroupingKey, Arc<Group>> = groups
            .into_iter()
            .map(|g| (g.key.clone(), Arc::new(g)))
            .collect();
        let mut store = Store {
            published: Arc::new(Mutex::new(map)),
            staged: BTreeMap::new(),
            wiped: false,
            names: HashMap::new(),
            n_series: 0,
            n_groups: 0,
            n_bytes: 0,
            limits,
            finals,
            staged_finals: Vec::new(),
        };
        store.rebuild_index();
        store
    }

    /// The readers' handle.
    pub(crate) fn published(&self) -> Published {
        Arc::clone(&self.published)
    }

    /// Groups and series held, changes staged included.
    pub(crate) fn totals(&self) -> (usize, usize) {
        (self.n_groups, self.n_series)
    }

    /// The group of `key` as it stands with the batch's changes.
    pub(crate) fn group(&self, key: &GroupingKey) -> Option<Arc<Group>> {
        if let Some(staged) = self.staged.get(key) {
            return staged.clone();
        }
        if self.wiped {
            return None;
        }
        self.published.lock().get(key).cloned()
    }

    /// The group of `key` at `now_ms`: one that expired is deleted first
    /// (staged like any change), so nothing merges into it or counts it.
    fn current(&mut self, key: &GroupingKey, now_ms: u64) -> Option<Arc<Group>> {
        let group = self.group(key)?;
        if group.expired(now_ms) {
            self.replace(key.clone(), Some(&group), None);
            return None;
        }
        Some(group)
    }

    /// Applies one change at `now_ms` (Unix milliseconds), staged until
    /// [`publish`](Self::publish); a refused push changes nothing but its
    /// group's failure time, which [`Change::Fail`] records.
    pub(crate) fn apply(&mut self, change: Change, now_ms: u64) -> Result<(), Refusal> {
        let now = now_ms as f64 / 1000.0;
        match change {
            Change::Push {
                key,
                prepared,
                mode,
                aggregate,
                expires_at_ms,
            } => {
                let old = self.current(&key, now_ms);
                let result = self.pushed(
                    &key,
                    old.as_deref(),
                    prepared,
                    mode,
                    aggregate,
                    now,
                    expires_at_ms,
                );
                match result {
                    Ok(group) => {
                        self.replace(key, old.as_deref(), Some(group));
                        Ok(())
                    }
                    Err(refusal) => {
                        if refusal.reason.marks_failure() {
                            self.fail(key, old.as_deref(), now, expires_at_ms);
                        }
                        Err(refusal)
                    }
                }
            }
            Change::Fail { key, expires_at_ms } => {
                let old = self.current(&key, now_ms);
                self.fail(key, old.as_deref(), now, expires_at_ms);
                Ok(())
            }
            Change::Delete { key } => {
                if let Some(old) = self.group(&key) {
                    self.replace(key, Some(&old), None);
                }
                Ok(())
            }
            Change::Wipe => {
                self.staged.clear();
                self.wiped = true;
                self.names.clear();
                self.n_series = 0;
                self.n_groups = 0;
                self.n_bytes = 0;
                Ok(())
            }
            Change::Expire => {
                for key in self.expired_keys(now_ms) {
                    if let Some(old) = self.group(&key) {
                        self.replace(key, Some(&old), None);
                    }
                }
                let expired: Vec<Vec<u8>> = self
                    .finals
                    .iter()
                    .filter(|(_, expires)| **expires <= now_ms)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    self.finals.remove(&id);
                    self.staged_finals.push((id, None));
                }
                Ok(())
            }
            Change::KeepFinal {
                id,
                row,
                expires_at_ms,
            } => {
                self.finals.insert(id.clone(), expires_at_ms);
                self.staged_finals.push((id, Some(row)));
                Ok(())
            }
        }
    }

    /// The group a push makes, or why it is refused.
    #[allow(clippy::too_many_arguments)]
    fn pushed(
        &self,
        key: &GroupingKey,
        old: Option<&Group>,
        prepared: Prepared,
        mode: Mode,
        aggregate: bool,
        now: f64,
        expires_at_ms: u64,
    ) -> Result<Group, Refusal> {
        for family in prepared.families.as_slice() {
            self.check_type(old, family)?;
        }
        let new_names = prepared.names;
        let (body, target) = match (old, mode, aggregate) {
            (None, _, _) | (Some(_), Mode::Replace, false) => (prepared.families, prepared.target),
            (Some(old), mode, aggregate) => {
                let (old_families, new_families, target) =
                    same_target(old, &prepared.families, prepared.target);
                let merged = if aggregate {
                    aggregated(&old_families, &new_families)?
                } else {
                    debug_assert_eq!(mode, Mode::Names);
                    let mut merged: Vec<MetricFamily> = old_families
                        .into_iter()
                        .filter(|f| new_names.binary_search(&f.name).is_err())
                        .collect();
                    merged.extend(new_families);
                    merged
                };
                let mut drops = Drops::default();
                let body = Families::normalize(merged, Some(&target), Origin::Peer, &mut drops);
                if !drops.is_empty() {
                    return Err(Refusal::new(
                        Reason::TypeConflict,
                        "the push clashes with the group's other families (a name written twice, or with two types, or a series given twice): PUT the whole group instead".to_owned(),
                    ));
                }
                (body, target)
            }
        };
        if old.is_none() && self.n_groups >= self.limits.max_groups {
            return Err(Refusal::new(
                Reason::TooManyGroups,
                format!(
                    "the gateway holds {} groups, its most: delete some, set a TTL, or raise --push-max-groups",
                    self.limits.max_groups
                ),
            ));
        }
        let n_old = old.map_or(0, |g| g.body.n_series());
        let n_after = self.n_series.saturating_sub(n_old) + body.n_series();
        if n_after > self.limits.max_series && body.n_series() > n_old {
            return Err(Refusal::new(
                Reason::TooManySeries,
                format!(
                    "the push would take the gateway past {} series in all groups: delete groups, set a TTL, or raise --push-max-series",
                    self.limits.max_series
                ),
            ));
        }
        let bytes_old = old.map_or(0, |g| g.body.approx_bytes());
        let bytes_after = self.n_bytes.saturating_sub(bytes_old) + body.approx_bytes();
        if bytes_after > self.limits.max_bytes && body.approx_bytes() > bytes_old {
            return Err(Refusal::new(
                Reason::TooManySeries,
                format!(
                    "the push would take the gateway past {} bytes of pushed metrics: delete groups, set a TTL, or raise --push-max-held-bytes",
                    self.limits.max_bytes
                ),
            ));
        }
        let mut family_times: Vec<(String, f64)> = match (old, mode, aggregate) {
            (Some(old), Mode::Names, _) | (Some(old), _, true) => old
                .family_times
                .iter()
                .filter(|(name, _)| new_names.binary_search(name).is_err())
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        family_times.extend(new_names.into_iter().map(|name| (name, now)));
        family_times.sort_by(|a, b| a.0.cmp(&b.0));
        let in_body: std::collections::HashSet<&str> =
            body.as_slice().iter().map(|f| f.name.as_str()).collect();
        family_times.retain(|(name, _)| in_body.contains(name.as_str()));
        let failure_time = old.map_or(0.0, |g| g.failure_time);
        Ok(Group::new(
            key.clone(),
            target,
            body,
            now,
            failure_time,
            expires_at_ms,
            family_times,
        ))
    }

    /// Refuses a family whose name another group holds with another type.
    fn check_type(&self, old: Option<&Group>, family: &MetricFamily) -> Result<(), Refusal> {
        let Some(entry) = self.names.get(&family.name) else {
            return Ok(());
        };
        if entry.metric_type == family.metric_type {
            return Ok(());
        }
        // The group's family times are its families' names, sorted.
        let own = old.is_some_and(|g| {
            g.family_times
                .binary_search_by(|(name, _)| name.as_str().cmp(&family.name))
                .is_ok()
        });
        if entry.n_groups > usize::from(own) {
            return Err(Refusal::new(
                Reason::TypeConflict,
                format!(
                    "metric {:?} is pushed as {} but another group holds it as {}: push it with one type everywhere",
                    family.name,
                    family.metric_type.text_name(),
                    entry.metric_type.text_name()
                ),
            ));
        }
        Ok(())
    }

    fn fail(&mut self, key: GroupingKey, old: Option<&Group>, now: f64, expires_at_ms: u64) {
        let group = match old {
            Some(old) => old.with_failure(now),
            None => {
                if self.n_groups >= self.limits.max_groups {
                    return;
                }
                let target = super::body::target_of(&key, true);
                Group::new(
                    key.clone(),
                    target,
                    Families::default(),
                    0.0,
                    now,
                    expires_at_ms,
                    Vec::new(),
                )
            }
        };
        self.replace(key, old, Some(group));
    }

    /// Stages `new` in place of `old` and keeps the index and totals.
    fn replace(&mut self, key: GroupingKey, old: Option<&Group>, new: Option<Group>) {
        if let Some(old) = old {
            self.unindex(old);
        }
        if let Some(new) = &new {
            self.index(new);
        }
        self.staged.insert(key, new.map(Arc::new));
    }

    fn index(&mut self, group: &Group) {
        self.n_groups += 1;
        self.n_series += group.body.n_series();
        self.n_bytes += group.body.approx_bytes();
        for family in group.body.as_slice() {
            let entry = self.names.entry(family.name.clone()).or_insert(NameEntry {
                metric_type: family.metric_type,
                n_groups: 0,
            });
            entry.n_groups += 1;
        }
    }

    fn unindex(&mut self, group: &Group) {
        self.n_groups = self.n_groups.saturating_sub(1);
        self.n_series = self.n_series.saturating_sub(group.body.n_series());
        self.n_bytes = self.n_bytes.saturating_sub(group.body.approx_bytes());
        for family in group.body.as_slice() {
            if let Some(entry) = self.names.get_mut(&family.name) {
                entry.n_groups = entry.n_groups.saturating_sub(1);
                if entry.n_groups == 0 {
                    self.names.remove(&family.name);
                }
            }
        }
    }

    fn expired_keys(&self, now_ms: u64) -> Vec<GroupingKey> {
        let mut keys: Vec<GroupingKey> = Vec::new();
        if !self.wiped {
            let published = self.published.lock();
            keys.extend(
                published
                    .iter()
                    .filter(|(key, group)| !self.staged.contains_key(*key) && group.expired(now_ms))
                    .map(|(key, _)| key.clone()),
            );
        }
        keys.extend(
            self.staged
                .iter()
                .filter(|(_, group)| group.as_ref().is_some_and(|g| g.expired(now_ms)))
                .map(|(key, _)| key.clone()),
        );
        keys
    }

    /// Whether the batch changed anything.
    pub(crate) fn has_pending(&self) -> bool {
        self.wiped || !self.staged.is_empty() || !self.staged_finals.is_empty()
    }

    /// What the disk must write for the batch.
    pub(crate) fn pending(&self) -> Pending<'_> {
        Pending {
            wiped: self.wiped,
            changes: self
                .staged
                .iter()
                .map(|(key, group)| (key, group.as_deref()))
                .collect(),
            finals: &self.staged_finals,
        }
    }

    /// Every group as it stands with the batch's changes: what a full
    /// rewrite of the store writes.
    pub(crate) fn current_groups(&self) -> Vec<(GroupingKey, Arc<Group>)> {
        let mut groups: BTreeMap<GroupingKey, Arc<Group>> = if self.wiped {
            BTreeMap::new()
        } else {
            self.published.lock().clone()
        };
        for (key, group) in &self.staged {
            match group {
                Some(group) => {
                    groups.insert(key.clone(), Arc::clone(group));
                }
                None => {
                    groups.remove(key);
                }
            }
        }
        groups.into_iter().collect()
    }

    /// Makes the batch visible to readers: it is on disk.
    pub(crate) fn publish(&mut self) {
        self.staged_finals.clear();
        let staged = std::mem::take(&mut self.staged);
        let mut published = self.published.lock();
        if self.wiped {
            published.clear();
        }
        for (key, group) in staged {
            match group {
                Some(group) => {
                    published.insert(key, group);
                }
                None => {
                    published.remove(&key);
                }
            }
        }
        self.wiped = false;
    }

    /// Forgets the batch: it could not be written.
    pub(crate) fn abort(&mut self) {
        // A final push not written stays in `finals` until it expires; its
        // deletion then deletes nothing.
        self.staged_finals.clear();
        self.staged.clear();
        self.wiped = false;
        self.rebuild_index();
    }

    fn rebuild_index(&mut self) {
        self.names.clear();
        self.n_series = 0;
        self.n_groups = 0;
        self.n_bytes = 0;
        let groups: Vec<Arc<Group>> = self.published.lock().values().cloned().collect();
        for group in groups {
            self.index(&group);
        }
    }
}

/// The stored and the pushed families of a group, with the target labels
/// both are served with: when one side holds `instance=""` in its target
/// and the other not (its series have their own), that side's series get
/// it back, and the target without it serves both.
fn same_target(
    old: &Group,
    new: &Families,
    new_target: Arc<TargetLabels>,
) -> (Vec<MetricFamily>, Vec<MetricFamily>, Arc<TargetLabels>) {
    let mut old_families = old.body.as_slice().to_vec();
    let mut new_families = new.as_slice().to_vec();
    if old.target == new_target {
        return (old_families, new_families, new_target);
    }
    let has_instance = |t: &TargetLabels| t.labels().iter().any(|l| l.name == "instance");
    if has_instance(&old.target) {
        super::body::add_empty_instance(&mut old_families);
        (old_families, new_families, new_target)
    } else {
        super::body::add_empty_instance(&mut new_families);
        (old_families, new_families, Arc::clone(&old.target))
    }
}

/// `new` added into `old`: counters, histogram buckets and summary counts
/// and sums add up per series; gauges, untyped and everything else take the
/// new value; series and families the push does not name are kept.
fn aggregated(old: &[MetricFamily], new: &[MetricFamily]) -> Result<Vec<MetricFamily>, Refusal> {
    let mut merged: Vec<MetricFamily> = old.to_vec();
    let mut by_name: HashMap<String, usize> = merged
        .iter()
        .enumerate()
        .map(|(index, f)| (f.name.clone(), index))
        .collect();
    for family in new {
        let Some(&index) = by_name.get(&family.name) else {
            by_name.insert(family.name.clone(), merged.len());
            merged.push(family.clone());
            continue;
        };
        let stored = &mut merged[index];
        if stored.metric_type != family.metric_type {
            *stored = family.clone();
            continue;
        }
        let mut by_labels: HashMap<Vec<(&str, &str)>, usize> = HashMap::new();
        let sorted = |labels: &'_ [Label]| -> Vec<(String, String)> {
            let mut pairs: Vec<(String, String)> = labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            pairs.sort();
            pairs
        };
        let stored_keys: Vec<Vec<(String, String)>> =
            stored.series.iter().map(|s| sorted(&s.labels)).collect();
        for (index, pairs) in stored_keys.iter().enumerate() {
            by_labels.insert(
                pairs
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect(),
                index,
            );
        }
        let mut appended: Vec<Series> = Vec::new();
        for series in &family.series {
            let pairs = sorted(&series.labels);
            let lookup: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            match by_labels.get(&lookup) {
                Some(&index) => {
                    let target = &mut stored.series[index].value;
                    add_into(target, &series.value, &family.name)?;
                }
                None => appended.push(series.clone()),
            }
        }
        stored.series.extend(appended);
        if family.help.is_some() {
            stored.help.clone_from(&family.help);
        }
    }
    Ok(merged)
}

fn add_into(stored: &mut Value, new: &Value, name: &str) -> Result<(), Refusal> {
    match (stored, new) {
        (Value::Counter(stored), Value::Counter(new)) => {
            stored.total += new.total;
        }
        (Value::Histogram(stored), Value::Histogram(new)) => {
            let same_layout = stored.buckets.len() == new.buckets.len()
                && stored
                    .buckets
                    .iter()
                    .zip(&new.buckets)
                    .all(|(a, b)| a.upper_bound == b.upper_bound);
            if !same_layout {
                return Err(Refusal::new(
                    Reason::AggregateMismatch,
                    format!(
                        "histogram {name:?} is pushed with other buckets than the stored one: aggregate only pushes with the same buckets, or PUT without aggregation to start over"
                    ),
                ));
            }
            for (a, b) in stored.buckets.iter_mut().zip(&new.buckets) {
                a.count += b.count;
            }
            stored.count = add_options(stored.count, new.count);
            stored.sum = add_options(stored.sum, new.sum);
        }
        (Value::Summary(stored), Value::Summary(new)) => {
            stored.count = add_options(stored.count, new.count);
            stored.sum = add_options(stored.sum, new.sum);
            stored.quantiles.clone_from(&new.quantiles);
        }
        (stored, new) => *stored = new.clone(),
    }
    Ok(())
}

fn add_options(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::push::body::{BodyFormat, BodyLimits, parse, prepare};

    const BODY_LIMITS: BodyLimits = BodyLimits {
        max_decompressed_bytes: 1 << 20,
        max_series: 1000,
        max_name_bytes: 128,
        max_value_bytes: 1024,
        max_labels_per_series: 16,
    };
    const LIMITS: StoreLimits = StoreLimits {
        max_groups: 3,
        max_series: 10,
        max_bytes: usize::MAX,
    };

    fn push(path: &str, body: &str, mode: Mode, aggregate: bool) -> Change {
        let key = GroupingKey::from_path(path).expect("as the test set it up");
        let families =
            parse(body.as_bytes(), BodyFormat::Text, &BODY_LIMITS).expect("as the test set it up");
        let prepared = prepare(families, &key, &BODY_LIMITS).expect("as the test set it up");
        Change::Push {
            key,
            prepared,
            mode,
            aggregate,
            expires_at_ms: 0,
        }
    }

    fn put(path: &str, body: &str) -> Change {
        push(path, body, Mode::Replace, false)
    }

    fn values(store: &Store, path: &str) -> Vec<(String, String)> {
        let key = GroupingKey::from_path(path).expect("as the test set it up");
        let Some(group) = store.published.lock().get(&key).cloned() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for family in group.body.as_slice() {
            for series in &family.series {
                let value = match &series.value {
                    Value::Single(v) => v.to_string(),
                    Value::Counter(c) => c.total.to_string(),
                    Value::Histogram(h) => format!(
                        "{:?}/{:?}",
                        h.buckets.iter().map(|b| b.count).collect::<Vec<_>>(),
                        h.count
                    ),
                    other => format!("{other:?}"),
                };
                out.push((family.name.clone(), value));
            }
        }
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn put_replaces_post_replaces_names_and_delete_removes() {
        let mut store = Store::new(
            Vec::new(),
            StoreLimits {
                max_groups: 10,
                max_series: 100,
                max_bytes: usize::MAX,
            },
        );
        store
            .apply(put("job/a", "x 1\ny 2\n"), 1000)
            .expect("as the test set it up");
        store.publish();
        assert_eq!(values(&store, "job/a"), pairs(&[("x", "1"), ("y", "2")]));
        store
            .apply(push("job/a", "y 3\nz 4\n", Mode::Names, false), 2000)
            .expect("as the test set it up");
        store.publish();
        assert_eq!(
            values(&store, "job/a"),
            pairs(&[("x", "1"), ("y", "3"), ("z", "4")])
        );
        let key = GroupingKey::from_path("job/a").expect("as the test set it up");
        let group = store
            .published
            .lock()
            .get(&key)
            .cloned()
            .expect("as the test set it up");
        assert_eq!((group.family_time("x"), group.family_time("y")), (1.0, 2.0));
        store
            .apply(put("job/a", ""), 3000)
            .expect("as the test set it up");
        store.publish();
        assert!(values(&store, "job/a").is_empty());
        store
            .apply(Change::Delete { key: key.clone() }, 4000)
            .expect("as the test set it up");
        store.publish();
        assert!(store.published.lock().is_empty());
        assert_eq!(store.totals(), (0, 0));
    }

    #[test]
    fn a_type_conflict_is_refused_by_the_index_and_marks_the_failure() {
        let mut store = Store::new(
            Vec::new(),
            StoreLimits {
                max_groups: 10,
                max_series: 100,
                max_bytes: usize::MAX,
            },
        );
        store
            .apply(put("job/a", "# TYPE t counter\nt 1\n"), 1000)
            .expect("as the test set it up");
        let refused = store
            .apply(put("job/b", "# TYPE t gauge\nt 1\n"), 2000)
            .expect_err("refused");
        assert_eq!(refused.reason, Reason::TypeConflict);
        store.publish();
        let b = GroupingKey::from_path("job/b").expect("as the test set it up");
        let group = store
            .published
            .lock()
            .get(&b)
            .cloned()
            .expect("as the test set it up");
        assert_eq!((group.push_time, group.failure_time), (0.0, 2.0));
        assert!(!group.last_push_successful());
        // The group that holds it alone may change its type.
        store
            .apply(put("job/a", "# TYPE t gauge\nt 1\n"), 3000)
            .expect("as the test set it up");
    }

    #[test]
    fn limits_refuse_new_groups_and_series_with_429() {
        let mut store = Store::new(Vec::new(), LIMITS);
        for job in ["a", "b", "c"] {
            store
                .apply(put(&format!("job/{job}"), "x 1\n"), 1)
                .expect("as the test set it up");
        }
        let refused = store.apply(put("job/d", "x 1\n"), 1).expect_err("refused");
        assert_eq!(refused.reason, Reason::TooManyGroups);
        let many: String = (0..9).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        let refused = store.apply(put("job/a", &many), 1).expect_err("refused");
        assert_eq!(refused.reason, Reason::TooManySeries);
        // Shrinking is always allowed.
        store
            .apply(put("job/a", ""), 1)
            .expect("as the test set it up");
        assert_eq!(store.totals(), (3, 2));
    }

    #[test]
    fn the_held_bytes_limit_refuses_growth_with_429_and_allows_shrinking() {
        let mut store = Store::new(
            Vec::new(),
            StoreLimits {
                max_groups: 10,
                max_series: 1000,
                max_bytes: 4096,
            },
        );
        store.apply(put("job/a", "x 1\n"), 1).expect("small enough");
        let many: String = (0..40).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        let refused = store
            .apply(put("job/b", &many), 1)
            .expect_err("past the bytes");
        assert_eq!(
            refused.reason.status(),
            axum::http::StatusCode::TOO_MANY_REQUESTS
        );
        assert!(
            refused.message.contains("--push-max-held-bytes"),
            "{}",
            refused.message
        );
        store.apply(put("job/a", ""), 1).expect("shrinking");
    }

    #[test]
    fn an_aborted_batch_is_never_seen_and_leaves_the_index_as_it_was() {
        let mut store = Store::new(
            Vec::new(),
            StoreLimits {
                max_groups: 10,
                max_series: 100,
                max_bytes: usize::MAX,
            },
        );
        store
            .apply(put("job/a", "# TYPE t counter\nt 1\n"), 1)
            .expect("as the test set it up");
        store.publish();
        store.apply(Change::Wipe, 2).expect("as the test set it up");
        store
            .apply(put("job/b", "# TYPE t gauge\nt 1\n"), 2)
            .expect("as the test set it up");
        assert_eq!(store.published.lock().len(), 1);
        store.abort();
        assert_eq!(store.totals(), (1, 1));
        let refused = store
            .apply(put("job/b", "# TYPE t gauge\nt 1\n"), 3)
            .expect_err("refused");
        assert_eq!(refused.reason, Reason::TypeConflict);
    }

    #[test]
    fn aggregation_adds_counters_and_buckets_and_keeps_the_last_gauge() {
        let mut store = Store::new(
            Vec::new(),
            StoreLimits {
                max_groups: 10,
                max_series: 100,
                max_bytes: usize::MAX,
            },
        );
        let body = "# TYPE c_total counter\nc_total 2\n# TYPE g gauge\ng 5\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
        store
            .apply(push("job/f", body, Mode::Replace, true), 1)
            .expect("as the test set it up");
        let second = body.replace("g 5", "g 7");
        store
            .apply(push("job/f", &second, Mode::Replace, true), 2)
            .expect("as the test set it up");
        store.publish();
        assert_eq!(
            values(&store, "job/f"),
            pairs(&[("c_total", "4"), ("g", "7"), ("h", "[2.0, 4.0]/Some(4.0)")])
        );
        let other_buckets = "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
        let refused = store
            .apply(push("job/f", other_buckets, Mode::Replace, true), 3)
            .expect_err("refused");
        assert_eq!(refused.reason, Reason::AggregateMismatch);
    }

    #[test]
    fn failed_pushes_expire_expired_groups_are_gone_and_merges_keep_the_rules() {
        let limits = StoreLimits {
            max_groups: 10,
            max_series: 100,
            max_bytes: usize::MAX,
        };
        let mut store = Store::new(Vec::new(), limits);
        // A group made by a failed push expires like any other.
        let key = GroupingKey::from_path("job/failed").expect("a key");
        store
            .apply(
                Change::Fail {
                    key,
                    expires_at_ms: 2_000,
                },
                1_000,
            )
            .expect("recorded");
        store.apply(Change::Expire, 2_000).expect("expired");
        store.publish();
        assert!(store.published.lock().is_empty());
        assert_eq!(store.totals(), (0, 0));
        // A POST after the group expired starts a new group.
        let mut first = put("job/p", "x 1\n");
        if let Change::Push { expires_at_ms, .. } = &mut first {
            *expires_at_ms = 5_000;
        }
        store.apply(first, 1_000).expect("pushed");
        store
            .apply(push("job/p", "y 2\n", Mode::Names, false), 6_000)
            .expect("pushed");
        store.publish();
        assert_eq!(values(&store, "job/p"), pairs(&[("y", "2")]));
        assert_eq!(store.totals(), (1, 1));
        // A POST that would break the group's own rules is refused.
        store
            .apply(
                put(
                    "job/h",
                    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                ),
                1,
            )
            .expect("pushed");
        let refused = store
            .apply(push("job/h", "h_count 5\n", Mode::Names, false), 2)
            .expect_err("refused");
        assert_eq!(refused.reason, Reason::TypeConflict);
    }

    #[test]
    fn groups_expire_at_their_time() {
        let mut store = Store::new(
            Vec::new(),
            StoreLimits {
                max_groups: 10,
                max_series: 100,
                max_bytes: usize::MAX,
            },
        );
        let mut change = put("job/t", "x 1\n");
        if let Change::Push { expires_at_ms, .. } = &mut change {
            *expires_at_ms = 5_000;
        }
        store.apply(change, 1_000).expect("as the test set it up");
        store
            .apply(put("job/forever", "x 1\n"), 1_000)
            .expect("as the test set it up");
        store.publish();
        store
            .apply(Change::Expire, 4_999)
            .expect("as the test set it up");
        assert!(!store.has_pending());
        store
            .apply(Change::Expire, 5_000)
            .expect("as the test set it up");
        store.publish();
        let keys: Vec<String> = store
            .published
            .lock()
            .keys()
            .map(GroupingKey::display)
            .collect();
        assert_eq!(keys, ["{job=\"forever\"}"]);
    }
}
