//! The merged view: one consistent snapshot of every source's parts,
//! grouped into the families of one valid exposition.
//!
//! Each part is already valid within itself (see [`Families`]); the view
//! only looks across parts. Families are grouped by the name they are
//! written under ([`tether_model::family_key`]: a counter `x_total` and a
//! counter `x` are one family), in key order. In each group the first
//! part's family fixes type, help and unit; a part's family of another type
//! is left out. A group that writes a name an earlier group writes (a
//! histogram `hh` from one agent, a gauge `hh_count` from another) is left
//! out whole. A series whose full label set (target labels included)
//! another part already gave is left out. Every refusal is counted by
//! reason. The renderers, and later the status page and remote_write,
//! read only this view.

mod families;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;

use tether_model::{
    Format, KeptNames, Label, MetricFamily, TargetLabels, estimated_series_bytes, family_key,
    render_end, render_metadata, render_series,
};

pub(crate) use families::{DropReason, Drops, Families, Origin};
use families::{label_set_hash, same_label_set};

use crate::sources::Part;

/// One family of a part, as the view refers to it.
#[derive(Debug, Clone)]
enum Member {
    /// The part's family as it is.
    Whole { part: usize, family: usize },
    /// A copy: some of its series were duplicates of another part's, or
    /// it is written under another name than the group's first family.
    Copy { part: usize, family: MetricFamily },
}

impl Member {
    fn part(&self) -> usize {
        match self {
            Member::Whole { part, .. } | Member::Copy { part, .. } => *part,
        }
    }
}

/// The families of one written name, across parts.
#[derive(Debug, Clone)]
struct Group {
    members: Vec<Member>,
}

/// What a view holds and what it left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ViewStats {
    /// Series in the view.
    pub(crate) series: u64,
    /// Series left out, by reason.
    pub(crate) drops: Drops,
}

/// One scrape's merged view of every source.
#[derive(Debug, Clone)]
pub(crate) struct View {
    parts: Vec<Part>,
    groups: Vec<Group>,
    stats: ViewStats,
}

impl View {
    /// Merges `parts`, in the order given.
    pub(crate) fn build(parts: Vec<Part>) -> View {
        let mut drops = Drops::default();
        // (key, part, family), sorted by key then part: a group's members
        // in part order.
        let mut entries: Vec<(&str, usize, usize)> = Vec::new();
        for (part_index, part) in parts.iter().enumerate() {
            for (family_index, family) in part.families.as_slice().iter().enumerate() {
                entries.push((
                    family_key(&family.name, family.metric_type),
                    part_index,
                    family_index,
                ));
            }
        }
        entries.sort_unstable();
        let family_of = |part: usize, family: usize| &parts[part].families.as_slice()[family];
        let mut groups: Vec<Group> = Vec::new();
        let mut names = KeptNames::default();
        let mut start = 0;
        while start < entries.len() {
            let key = entries[start].0;
            let end = start
                + entries[start..]
                    .iter()
                    .take_while(|(k, _, _)| *k == key)
                    .count();
            let (_, first_part, first_family) = entries[start];
            let first = family_of(first_part, first_family);
            let n_series_in_group: usize = entries[start..end]
                .iter()
                .map(|&(_, p, f)| family_of(p, f).series.len())
                .sum();
            let writes_created = entries[start..end]
                .iter()
                .any(|&(_, p, f)| family_of(p, f).writes_created());
            if let Some((_, type_conflict)) = names.collision_written(
                &first.name,
                first.metric_type,
                groups.len(),
                writes_created,
            ) {
                // Keys of one type are one group, so this is a suffix
                // collision with an earlier (shorter) key.
                let reason = if type_conflict {
                    DropReason::TypeConflict
                } else {
                    DropReason::NameCollision
                };
                drops.add(reason, n_series_in_group);
                start = end;
                continue;
            }
            let mut members = Vec::with_capacity(end - start);
            for &(_, part, family_index) in &entries[start..end] {
                let family = family_of(part, family_index);
                if family.metric_type != first.metric_type {
                    drops.add(DropReason::TypeConflict, family.series.len());
                    continue;
                }
                if family.name == first.name {
                    members.push(Member::Whole {
                        part,
                        family: family_index,
                    });
                } else {
                    // `x` beside `x_total`: written under the first name.
                    let mut renamed = family.clone();
                    renamed.name.clone_from(&first.name);
                    members.push(Member::Copy {
                        part,
                        family: renamed,
                    });
                }
            }
            if members.len() > 1 && !duplicates_impossible(&parts, &members) {
                drop_duplicates(&parts, &mut members, &mut drops);
            }
            groups.push(Group { members });
            start = end;
        }
        let mut view = View {
            parts,
            groups,
            stats: ViewStats::default(),
        };
        let mut series = 0u64;
        for group in &view.groups {
            for member in &group.members {
                series += view.family(member).series.len() as u64;
            }
        }
        view.stats = ViewStats { series, drops };
        view
    }

    fn family<'a>(&'a self, member: &'a Member) -> &'a MetricFamily {
        member_family(&self.parts, member)
    }

    /// What the view holds and left out.
    pub(crate) fn stats(&self) -> ViewStats {
        self.stats
    }

    /// About how many bytes [`render`](Self::render) writes, never much
    /// less (see [`tether_model::estimated_series_bytes`]).
    pub(crate) fn estimated_bytes(&self) -> usize {
        let mut bytes = 0;
        for group in &self.groups {
            for member in &group.members {
                let family = self.family(member);
                let target = self.parts[member.part()].target.as_deref();
                bytes += estimated_series_bytes(family, target)
                    + family.name.len() * 2
                    + family.help.as_ref().map_or(0, String::len)
                    + 32;
            }
        }
        bytes
    }

    /// Renders the view in `format` into `out`, ended as the format
    /// requires: one HELP/TYPE per family, every part's series with its
    /// target labels.
    pub(crate) fn render(&self, format: Format, out: &mut Vec<u8>) {
        for group in &self.groups {
            let Some(first) = group.members.first() else {
                continue;
            };
            render_metadata(self.family(first), format, out);
            for member in &group.members {
                let target = self.parts[member.part()].target.as_deref();
                render_series(self.family(member), format, target, out);
            }
        }
        render_end(format, out);
    }
}

fn member_family<'a>(parts: &'a [Part], member: &'a Member) -> &'a MetricFamily {
    match member {
        Member::Whole { part, family } => &parts[*part].families.as_slice()[*family],
        Member::Copy { family, .. } => family,
    }
}

/// Whether the members' series cannot repeat each other: every part is
/// free of duplicates within itself, so two series can only be equal
/// across parts; when every part has target labels of the same names and
/// no two parts the same values (distinct agents), every series carries
/// its part's values and none can equal another part's.
fn duplicates_impossible(parts: &[Part], members: &[Member]) -> bool {
    let mut targets: Vec<&TargetLabels> = Vec::with_capacity(members.len());
    for member in members {
        match parts[member.part()].target.as_deref() {
            Some(target) if !target.labels().is_empty() => targets.push(target),
            _ => return false,
        }
    }
    let first = targets[0].labels();
    let same_names = |t: &TargetLabels| {
        t.labels().len() == first.len()
            && t.labels().iter().zip(first).all(|(a, b)| a.name == b.name)
    };
    if !targets.iter().all(|t| same_names(t)) {
        return false;
    }
    let mut values: std::collections::HashSet<&[Label]> =
        std::collections::HashSet::with_capacity(targets.len());
    targets.iter().all(|t| values.insert(t.labels()))
}

/// Leaves out every series whose full label set an earlier member gave.
fn drop_duplicates(parts: &[Part], members: &mut [Member], drops: &mut Drops) {
    let hasher = RandomState::new();
    // Hash -> (member, series) of the first series seen with it.
    let mut seen: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    // Found first, applied after: `seen` refers to the members unchanged.
    let mut repeats: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
    let target_of = |member: &Member| -> &[Label] {
        parts[member.part()]
            .target
            .as_deref()
            .map_or(&[], TargetLabels::labels)
    };
    for (member_index, member) in members.iter().enumerate() {
        let target = target_of(member);
        let family = member_family(parts, member);
        for (series_index, series) in family.series.iter().enumerate() {
            let full = || target.iter().chain(series.labels.iter());
            let hash = label_set_hash(full(), &hasher);
            let earlier = seen.entry(hash).or_default();
            let repeated = earlier.iter().any(|&(m, s)| {
                let other = &members[m];
                let other_series = &member_family(parts, other).series[s];
                same_label_set(
                    &target_of(other).iter().chain(other_series.labels.iter()),
                    &full(),
                )
            });
            if repeated {
                repeats[member_index].push(series_index);
            } else {
                earlier.push((member_index, series_index));
            }
        }
    }
    for (member, duplicates) in members.iter_mut().zip(repeats) {
        if duplicates.is_empty() {
            continue;
        }
        drops.add(DropReason::Duplicate, duplicates.len());
        let mut copy = member_family(parts, member).clone();
        let mut index = 0;
        copy.series.retain(|_| {
            let keep = duplicates.binary_search(&index).is_err();
            index += 1;
            keep
        });
        let part = member.part();
        *member = Member::Copy { part, family: copy };
    }
}

#[cfg(test)]
mod tests;
