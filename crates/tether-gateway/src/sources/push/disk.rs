//! The push store on disk: one redb file, `push.redb` in the data
//! directory, one row per group, written a batch per transaction and
//! fsync'd before any request of the batch is answered.
//!
//! A file that is not a store of this format (garbage, a truncated file,
//! another program's database) is renamed aside with a clear error and a
//! fresh store started; it is never overwritten. A row that does not
//! decode is skipped and counted, the others load.
//!
//! A row: version (1 byte), push time and failure time (f64 LE, Unix
//! seconds), expiry (u64 LE, Unix ms, 0 = never), the family times (a
//! varint count, then name and f64 each), then the families as delimited
//! `io.prometheus.client.MetricFamily` messages, without the grouping key's
//! labels (the key of the row holds them).

use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
};

use super::key::{GroupingKey, put_text, put_varint, take_text, take_varint};
use super::store::{Group, Pending};
use crate::view::{Drops, Families, Origin};

/// The store's file in the data directory.
pub(crate) const STORE_FILE: &str = "push.redb";
/// The page cache redb keeps in memory; the groups themselves are in
/// memory anyway, so it only serves writes.
const CACHE_BYTES: usize = 16 << 20;
/// The marker of this store's format in its `meta` table.
const FORMAT: &str = "tether push store 1";
const ROW_VERSION: u8 = 1;
/// The most bytes of one delimited message in a row (a group is bounded
/// by the push limits long before this).
const MAX_ROW_MESSAGE_BYTES: usize = 1 << 30;

const GROUPS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("push_groups");
const FINALS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("agent_final_pushes");
const META: TableDefinition<'static, &'static str, &'static str> = TableDefinition::new("meta");

/// An open store.
#[derive(Debug)]
pub(crate) struct Disk {
    path: PathBuf,
    /// `None` after a failed write: redb refuses every operation after an
    /// I/O error, so the next write opens the file again.
    db: Option<Database>,
}

/// What opening found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) disk: Disk,
    pub(crate) groups: Vec<Group>,
    /// Where an unreadable file was moved, if one was.
    pub(crate) moved_aside: Option<(PathBuf, String)>,
    /// Agents' final pushes not expired: identity labels, families, expiry.
    pub(crate) finals: Vec<Final>,
    /// Rows that did not decode.
    pub(crate) skipped_rows: usize,
}

/// An agent's final push as stored.
#[derive(Debug)]
pub(crate) struct Final {
    pub(crate) identity: Vec<tether_model::Label>,
    pub(crate) families: Vec<tether_model::MetricFamily>,
    /// Unix ms.
    pub(crate) expires_at_ms: u64,
}

impl Disk {
    /// Opens (or creates) the store in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Opened, String> {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the data directory {}: {e}: create it, or pass another --data-dir (or --no-persistence)",
                dir.display()
            )
        })?;
        let path = dir.join(STORE_FILE);
        let mut moved_aside = None;
        let db = match open_db(&path) {
            Ok(db) => match check_format(&db) {
                Ok(()) => db,
                Err(Unusable::Foreign(why)) => {
                    drop(db);
                    moved_aside = Some((move_aside(&path)?, why));
                    open_db(&path).map_err(|e| describe(&path, &e))?
                }
                Err(Unusable::Fatal(why)) => return Err(why),
            },
            Err(error) if is_corrupt(&error) => {
                moved_aside = Some((move_aside(&path)?, error.to_string()));
                open_db(&path).map_err(|e| describe(&path, &e))?
            }
            Err(error) => return Err(describe(&path, &error)),
        };
        let read_error =
            |e: redb::Error| format!("cannot read the push store {}: {e}", path.display());
        let (groups, mut skipped_rows) = load(&db, GROUPS, decode_group).map_err(read_error)?;
        let (finals, skipped_finals) = load(&db, FINALS, decode_final).map_err(read_error)?;
        skipped_rows += skipped_finals;
        write_format(&db)
            .map_err(|e| format!("cannot write the push store {}: {e}", path.display()))?;
        Ok(Opened {
            disk: Disk { path, db: Some(db) },
            groups,
            moved_aside,
            finals,
            skipped_rows,
        })
    }

    /// Writes a batch in one transaction, durable when this returns `Ok`.
    pub(crate) fn write(&mut self, pending: &Pending<'_>) -> Result<(), String> {
        let db = match self.db.take() {
            Some(db) => db,
            None => open_db(&self.path).map_err(|e| describe(&self.path, &e))?,
        };
        let result = write_batch(&db, pending);
        if result.is_ok() {
            self.db = Some(db);
        }
        result
    }
}

fn write_batch(db: &Database, pending: &Pending<'_>) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(GROUPS).map_err(|e| e.to_string())?;
        if pending.wiped {
            table.retain(|_, _| false).map_err(|e| e.to_string())?;
        }
        let rows = pending
            .changes
            .iter()
            .map(|(key, group)| (key.encode(), group.map(encode_group)));
        write_rows(&mut table, rows)?;
    }
    if !pending.finals.is_empty() {
        let mut table = txn.open_table(FINALS).map_err(|e| e.to_string())?;
        let rows = pending.finals.iter().map(|(id, row)| (id, row.as_ref()));
        write_rows(&mut table, rows)?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// Writes each row (`Some`) or deletes it (`None`).
fn write_rows<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    rows: impl Iterator<Item = (K, Option<V>)>,
) -> Result<(), String> {
    for (key, value) in rows {
        match value {
            Some(value) => {
                table
                    .insert(key.as_ref(), value.as_ref())
                    .map_err(|e| e.to_string())?;
            }
            None => {
                table.remove(key.as_ref()).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// The row of an agent's final push: its id (the identity labels, each
/// name and value a varint length and bytes) and its value (version,
/// expiry in Unix ms, then the delimited families).
pub(crate) fn encode_final(
    identity: &[tether_model::Label],
    families: &[tether_model::MetricFamily],
    expires_at_ms: u64,
) -> (Vec<u8>, Vec<u8>) {
    let mut id = Vec::new();
    for label in identity {
        put_text(&mut id, &label.name);
        put_text(&mut id, &label.value);
    }
    let mut row = vec![ROW_VERSION];
    row.extend_from_slice(&expires_at_ms.to_le_bytes());
    tether_model::encode_delimited(families, &mut row);
    (id, row)
}

fn decode_final(mut id: &[u8], value: &[u8]) -> Option<Final> {
    let mut identity = Vec::new();
    while !id.is_empty() {
        let name = take_text(&mut id)?;
        let value = take_text(&mut id)?;
        identity.push(tether_model::Label::new(name, value));
    }
    let (&version, mut rest) = value.split_first()?;
    if version != ROW_VERSION {
        return None;
    }
    let expires_at_ms = u64::from_le_bytes(take_array(&mut rest)?);
    let families = tether_model::decode_delimited(rest, MAX_ROW_MESSAGE_BYTES).ok()?;
    Some(Final {
        identity,
        families,
        expires_at_ms,
    })
}

fn open_db(path: &Path) -> Result<Database, DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

/// Whether an open failed because the file is not a readable store (as
/// opposed to the system refusing it: permissions, a lock, I/O).
fn is_corrupt(error: &DatabaseError) -> bool {
    match error {
        DatabaseError::Storage(StorageError::Corrupted(_) | StorageError::ValueTooLarge(_))
        | DatabaseError::UpgradeRequired(_)
        | DatabaseError::RepairAborted => true,
        DatabaseError::Storage(StorageError::Io(e)) => matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

fn describe(path: &Path, error: &DatabaseError) -> String {
    match error {
        DatabaseError::DatabaseAlreadyOpen => format!(
            "the push store {} is open in another process: run one gateway per --data-dir",
            path.display()
        ),
        other => format!(
            "cannot open the push store {}: {other}: check the data directory, or pass --no-persistence",
            path.display()
        ),
    }
}

enum Unusable {
    /// Not this store: moved aside.
    Foreign(String),
    /// This store, from a newer gateway: left alone.
    Fatal(String),
}

fn check_format(db: &Database) -> Result<(), Unusable> {
    let txn = db
        .begin_read()
        .map_err(|e| Unusable::Foreign(e.to_string()))?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(|e| Unusable::Foreign(e.to_string()))?
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let format = match txn.open_table(META) {
        Ok(meta) => meta
            .get("format")
            .ok()
            .flatten()
            .map(|v| v.value().to_owned()),
        Err(_) => None,
    };
    match format.as_deref() {
        Some(FORMAT) => Ok(()),
        Some(other) if other.starts_with("tether push store ") => Err(Unusable::Fatal(format!(
            "the push store was written by a newer gateway ({other:?}): run that version, or pass another --data-dir"
        ))),
        _ => Err(Unusable::Foreign(format!(
            "the file holds tables {tables:?} but no tether push store"
        ))),
    }
}

fn write_format(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("format", FORMAT)?;
        txn.open_table(GROUPS)?;
        txn.open_table(FINALS)?;
    }
    txn.commit()?;
    Ok(())
}

/// Renames `path` to `path.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> Result<PathBuf, String> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{seconds}"));
    // Never over an earlier one moved aside in the same second.
    let mut n = 1;
    while Path::new(&aside).exists() {
        n += 1;
        aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{seconds}-{n}"));
    }
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|e| {
        format!(
            "the push store {} is unreadable and cannot be moved aside: {e}: move it yourself",
            path.display()
        )
    })?;
    Ok(aside)
}

/// Every row of `table` that `decode` reads, and how many it could not.
fn load<T>(
    db: &Database,
    table: TableDefinition<'static, &'static [u8], &'static [u8]>,
    decode: fn(&[u8], &[u8]) -> Option<T>,
) -> Result<(Vec<T>, usize), redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(table) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e.into()),
    };
    let mut rows = Vec::new();
    let mut skipped = 0;
    for row in table.iter()? {
        let (key, value) = row?;
        match decode(key.value(), value.value()) {
            Some(decoded) => rows.push(decoded),
            None => skipped += 1,
        }
    }
    Ok((rows, skipped))
}

/// A group as a row's value.
pub(crate) fn encode_group(group: &Group) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + group.body.approx_bytes() / 2);
    out.push(ROW_VERSION);
    out.extend_from_slice(&group.push_time.to_le_bytes());
    out.extend_from_slice(&group.failure_time.to_le_bytes());
    out.extend_from_slice(&group.expires_at_ms.to_le_bytes());
    put_varint(&mut out, group.family_times.len() as u64);
    for (name, time) in &group.family_times {
        put_text(&mut out, name);
        out.extend_from_slice(&time.to_le_bytes());
    }
    tether_model::encode_delimited(group.body.as_slice(), &mut out);
    out
}

/// A row back into its group; `None` if it does not decode.
pub(crate) fn decode_group(key: &[u8], mut value: &[u8]) -> Option<Group> {
    let key = GroupingKey::decode(key)?;
    let (&version, rest) = value.split_first()?;
    if version != ROW_VERSION {
        return None;
    }
    value = rest;
    let push_time = take_f64(&mut value)?;
    let failure_time = take_f64(&mut value)?;
    let expires_at_ms = u64::from_le_bytes(take_array(&mut value)?);
    let n_times = usize::try_from(take_varint(&mut value)?).ok()?;
    let mut family_times = Vec::with_capacity(n_times.min(value.len()));
    for _ in 0..n_times {
        let name = take_text(&mut value)?;
        family_times.push((name, take_f64(&mut value)?));
    }
    let families = tether_model::decode_delimited(value, MAX_ROW_MESSAGE_BYTES).ok()?;
    let target = super::body::target_of(&key, super::body::instance_in_target(&key, &families));
    let body = Families::normalize(families, Some(&target), Origin::Peer, &mut Drops::default());
    Some(Group::new(
        key,
        target,
        body,
        push_time,
        failure_time,
        expires_at_ms,
        family_times,
    ))
}

fn take_array(bytes: &mut &[u8]) -> Option<[u8; 8]> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    *bytes = rest;
    Some(*head)
}

fn take_f64(bytes: &mut &[u8]) -> Option<f64> {
    take_array(bytes).map(f64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::push::store::{Change, Mode, Store, StoreLimits};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tether-disk-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn change(path: &str, body: &str) -> Change {
        use crate::sources::push::body::{BodyFormat, BodyLimits, parse, prepare};
        let limits = BodyLimits {
            max_decompressed_bytes: 1 << 20,
            max_series: 100,
            max_name_bytes: 100,
            max_value_bytes: 100,
            max_labels_per_series: 10,
        };
        let key = GroupingKey::from_path(path).expect("as the test set it up");
        let families =
            parse(body.as_bytes(), BodyFormat::Text, &limits).expect("as the test set it up");
        Change::Push {
            prepared: prepare(families, &key, &limits).expect("as the test set it up"),
            key,
            mode: Mode::Replace,
            aggregate: false,
            expires_at_ms: 77,
        }
    }

    const LIMITS: StoreLimits = StoreLimits {
        max_groups: 100,
        max_series: 100,
        max_bytes: usize::MAX,
    };

    #[test]
    fn groups_written_are_the_groups_loaded() {
        let dir = temp_dir("roundtrip");
        let mut opened = Disk::open(&dir).expect("as the test set it up");
        assert!(opened.groups.is_empty() && opened.moved_aside.is_none());
        let mut store = Store::new(Vec::new(), LIMITS);
        store
            .apply(change("job/a/x@base64/=", "# HELP h hi\n# TYPE h histogram\nh_bucket{le=\"1\",k=\"v\"} 1\nh_bucket{le=\"+Inf\",k=\"v\"} 2\nh_sum{k=\"v\"} 1.5\nh_count{k=\"v\"} 2\nplain 3\n"), 1_500)
            .expect("as the test set it up");
        store
            .apply(change("job/b", "y 1\n"), 2_000)
            .expect("as the test set it up");
        opened
            .disk
            .write(&store.pending())
            .expect("as the test set it up");
        store.publish();
        store
            .apply(
                Change::Delete {
                    key: GroupingKey::from_path("job/b").expect("as the test set it up"),
                },
                3_000,
            )
            .expect("as the test set it up");
        opened
            .disk
            .write(&store.pending())
            .expect("as the test set it up");
        store.publish();
        drop(opened);
        let reopened = Disk::open(&dir).expect("as the test set it up");
        assert_eq!(reopened.skipped_rows, 0);
        assert_eq!(reopened.groups.len(), 1);
        let loaded = &reopened.groups[0];
        let published = store.published();
        let kept = published
            .lock()
            .values()
            .next()
            .cloned()
            .expect("as the test set it up");
        assert_eq!(loaded.key, kept.key);
        assert_eq!(loaded.body.as_slice(), kept.body.as_slice());
        assert_eq!(
            (
                loaded.push_time,
                loaded.expires_at_ms,
                loaded.family_times.clone()
            ),
            (1.5, 77, kept.family_times.clone())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_file_is_moved_aside_never_overwritten() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).expect("as the test set it up");
        let garbage = b"this is not a database at all, just bytes".repeat(200);
        std::fs::write(dir.join(STORE_FILE), &garbage).expect("as the test set it up");
        let opened = Disk::open(&dir).expect("as the test set it up");
        let (aside, why) = opened.moved_aside.clone().expect("moved aside");
        assert!(aside.to_string_lossy().contains(".corrupt-"), "{aside:?}");
        assert!(!why.is_empty());
        assert_eq!(
            std::fs::read(&aside).expect("as the test set it up"),
            garbage
        );
        drop(opened);
        // A redb file of another program.
        let foreign = temp_dir("foreign");
        std::fs::create_dir_all(&foreign).expect("as the test set it up");
        {
            let db = Database::create(foreign.join(STORE_FILE)).expect("as the test set it up");
            let txn = db.begin_write().expect("as the test set it up");
            {
                let table: TableDefinition<'_, &str, u64> = TableDefinition::new("theirs");
                txn.open_table(table)
                    .expect("as the test set it up")
                    .insert("k", 1)
                    .expect("as the test set it up");
            }
            txn.commit().expect("as the test set it up");
        }
        let opened = Disk::open(&foreign).expect("as the test set it up");
        assert!(opened.moved_aside.is_some());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&foreign);
    }

    #[test]
    fn a_row_that_does_not_decode_is_refused() {
        assert!(decode_group(&[], &[1]).is_none());
        let key = GroupingKey::from_path("job/a")
            .expect("as the test set it up")
            .encode();
        assert!(decode_group(&key, &[9, 0, 0]).is_none());
        assert!(decode_group(&key, &[1, 0, 0]).is_none());
    }
}
