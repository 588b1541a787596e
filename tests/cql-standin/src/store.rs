//! Schema and data: keyspaces, tables, partitions and rows, all in memory.

use crate::cql::{CreateKeyspace, CreateTable, PropValue};
use crate::error::CqlError;
use crate::murmur3;
use crate::types::{CqlType, Literal};
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Position in the partition key.
    PartitionKey(usize),
    /// Position in the clustering key.
    Clustering(usize),
    Regular,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub typ: CqlType,
    pub kind: ColumnKind,
}

#[derive(Debug, Clone)]
pub struct Keyspace {
    pub name: String,
    /// Replication options as stored in `system_schema.keyspaces.replication` (class normalised
    /// to its full name).
    pub replication: BTreeMap<String, String>,
    pub durable_writes: bool,
    pub tables: BTreeMap<String, Table>,
}

/// A row: its clustering key values, whether it has a row marker (it was INSERTed), and its
/// regular cells (indexed by column index; key columns are always None here).
#[derive(Debug, Clone)]
pub struct Row {
    pub clustering: Vec<Vec<u8>>,
    pub marker: bool,
    pub cells: Vec<Option<Vec<u8>>>,
}

impl Row {
    pub fn is_live(&self) -> bool {
        self.marker || self.cells.iter().any(Option::is_some)
    }
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub key: Vec<Vec<u8>>,
    /// Keyed by the order-preserving encoding of the clustering key (in declared order).
    pub rows: BTreeMap<Vec<u8>, Row>,
}

/// Partitions are ordered by token, then by the serialized key, like on a real cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionPos {
    pub token: i64,
    pub key: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub keyspace: String,
    pub name: String,
    pub id: [u8; 16],
    /// Columns in declaration order.
    pub columns: Vec<Column>,
    /// Column indexes of the partition key, in order.
    pub partition_key: Vec<usize>,
    /// Column indexes of the clustering key, in order, with "descending" flags.
    pub clustering: Vec<usize>,
    pub clustering_desc: Vec<bool>,
    pub comment: String,
    pub partitions: BTreeMap<PartitionPos, Partition>,
}

impl Table {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// All columns in "table order": partition key, clustering key, then regular columns by name
    /// (the order of `SELECT *` on Cassandra and ScyllaDB).
    pub fn all_columns_order(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self.partition_key.clone();
        out.extend(self.clustering.iter().copied());
        let mut regular: Vec<usize> = (0..self.columns.len()).filter(|&i| self.columns[i].kind == ColumnKind::Regular).collect();
        regular.sort_by(|&a, &b| self.columns[a].name.cmp(&self.columns[b].name));
        out.extend(regular);
        out
    }

    pub fn is_primary_key(&self, col: usize) -> bool {
        self.columns[col].kind != ColumnKind::Regular
    }

    pub fn partition_pos(&self, key: &[Vec<u8>]) -> PartitionPos {
        let bytes = murmur3::serialize_partition_key(key);
        PartitionPos { token: murmur3::token(&bytes), key: bytes }
    }

    /// The order-preserving encoding of a full clustering key (respecting DESC columns).
    pub fn clustering_encoding(&self, values: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let col = &self.columns[self.clustering[i]];
            let start = out.len();
            col.typ.order_encode(v, &mut out);
            if self.clustering_desc[i] {
                for b in &mut out[start..] {
                    *b = !*b;
                }
            }
        }
        out
    }

    /// Value of any column of a row (key columns from the keys).
    pub fn value_of<'a>(&self, partition: &'a Partition, row: &'a Row, col: usize) -> Option<&'a [u8]> {
        match self.columns[col].kind {
            ColumnKind::PartitionKey(i) => Some(&partition.key[i]),
            ColumnKind::Clustering(i) => Some(&row.clustering[i]),
            ColumnKind::Regular => row.cells[col].as_deref(),
        }
    }
}

/// A write to one row.
#[derive(Debug, Clone)]
pub enum CellWrite {
    Set(Vec<u8>),
    /// A tombstone (null).
    Delete,
}

/// A bound, validated mutation of one table.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// INSERT (marker = true) or UPDATE (marker = false) of one row.
    Upsert { pk: Vec<Vec<u8>>, ck: Vec<Vec<u8>>, marker: bool, cells: Vec<(usize, CellWrite)> },
    /// DELETE of a whole row.
    DeleteRow { pk: Vec<Vec<u8>>, ck: Vec<Vec<u8>> },
    /// DELETE of a whole partition.
    DeletePartition { pk: Vec<Vec<u8>> },
}

impl Mutation {
    pub fn pk(&self) -> &[Vec<u8>] {
        match self {
            Mutation::Upsert { pk, .. } | Mutation::DeleteRow { pk, .. } | Mutation::DeletePartition { pk } => pk,
        }
    }

    /// The clustering key of the row this mutation targets (None for a partition deletion).
    pub fn ck(&self) -> Option<&[Vec<u8>]> {
        match self {
            Mutation::Upsert { ck, .. } | Mutation::DeleteRow { ck, .. } => Some(ck),
            Mutation::DeletePartition { .. } => None,
        }
    }

    pub fn apply(&self, table: &mut Table) {
        let pos = table.partition_pos(self.pk());
        match self {
            Mutation::Upsert { pk, ck, marker, cells } => {
                let enc = table.clustering_encoding(ck);
                let ncols = table.columns.len();
                let exists = table.partitions.get(&pos).is_some_and(|p| p.rows.contains_key(&enc));
                if !exists && !*marker && !cells.iter().any(|(_, w)| matches!(w, CellWrite::Set(_))) {
                    // Only tombstones for a row that does not exist: nothing to do.
                    return;
                }
                let part = table.partitions.entry(pos.clone()).or_insert_with(|| Partition { key: pk.clone(), rows: BTreeMap::new() });
                let row =
                    part.rows.entry(enc.clone()).or_insert_with(|| Row { clustering: ck.clone(), marker: false, cells: vec![None; ncols] });
                if *marker {
                    row.marker = true;
                }
                for (col, w) in cells {
                    row.cells[*col] = match w {
                        CellWrite::Set(v) => Some(v.clone()),
                        CellWrite::Delete => None,
                    };
                }
                if !row.is_live() {
                    part.rows.remove(&enc);
                }
                if part.rows.is_empty() {
                    table.partitions.remove(&pos);
                }
            }
            Mutation::DeleteRow { ck, .. } => {
                let enc = table.clustering_encoding(ck);
                if let Some(part) = table.partitions.get_mut(&pos) {
                    part.rows.remove(&enc);
                    if part.rows.is_empty() {
                        table.partitions.remove(&pos);
                    }
                }
            }
            Mutation::DeletePartition { .. } => {
                table.partitions.remove(&pos);
            }
        }
    }
}

/// Everything the server holds.
#[derive(Debug, Default)]
pub struct Store {
    pub keyspaces: BTreeMap<String, Keyspace>,
    /// Bumped by every schema change; reported as `schema_version`.
    pub schema_generation: u64,
}

pub const SYSTEM_KEYSPACES: &[&str] = &["system", "system_schema", "system_auth", "system_distributed", "system_traces"];

fn lit_text(l: &Literal) -> Option<String> {
    match l {
        Literal::Str(s) | Literal::Int(s) | Literal::Float(s) => Some(s.clone()),
        Literal::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn prop_bool(name: &str, v: &PropValue) -> Result<bool, CqlError> {
    match v {
        PropValue::Const(Literal::Bool(b)) => Ok(*b),
        PropValue::Const(Literal::Str(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        PropValue::Const(Literal::Str(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(CqlError::syntax(format!("Invalid boolean value for property '{name}'"))),
    }
}

/// Table options accepted and ignored (they have no effect in memory).
const IGNORED_TABLE_OPTIONS: &[&str] = &[
    "comment",
    "compaction",
    "compression",
    "caching",
    "gc_grace_seconds",
    "bloom_filter_fp_chance",
    "speculative_retry",
    "read_repair_chance",
    "dclocal_read_repair_chance",
    "crc_check_chance",
    "memtable_flush_period_in_ms",
    "min_index_interval",
    "max_index_interval",
    "tombstone_gc",
    "paxos_grace_seconds",
    "additional_write_policy",
    "read_repair",
    "extensions",
    "cdc",
];

impl Store {
    pub fn schema_version(&self) -> [u8; 16] {
        // A version-4-shaped UUID that changes with every schema change.
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&0x5ca1_ab1e_0000_4000u64.to_be_bytes());
        u[8..].copy_from_slice(&(0x8000_0000_0000_0000u64 | self.schema_generation).to_be_bytes());
        u
    }

    pub fn table(&self, ks: &str, name: &str) -> Option<&Table> {
        self.keyspaces.get(ks)?.tables.get(name)
    }

    pub fn table_mut(&mut self, ks: &str, name: &str) -> Option<&mut Table> {
        self.keyspaces.get_mut(ks)?.tables.get_mut(name)
    }

    /// Returns false when the keyspace existed and IF NOT EXISTS was given.
    pub fn create_keyspace(&mut self, stmt: &CreateKeyspace, datacenter: &str) -> Result<bool, CqlError> {
        let keyspace = build_keyspace(stmt, datacenter)?;
        if self.keyspaces.contains_key(&stmt.name) {
            if stmt.if_not_exists {
                return Ok(false);
            }
            return Err(CqlError::already_exists(&stmt.name, "", format!("Keyspace {} already exists", stmt.name)));
        }
        self.keyspaces.insert(stmt.name.clone(), keyspace);
        self.schema_generation += 1;
        Ok(true)
    }

    pub fn drop_keyspace(&mut self, name: &str, if_exists: bool) -> Result<bool, CqlError> {
        if SYSTEM_KEYSPACES.contains(&name) {
            return Err(CqlError::unauthorized(format!("{name} keyspace is not user-modifiable.")));
        }
        if self.keyspaces.remove(name).is_none() {
            if if_exists {
                return Ok(false);
            }
            return Err(CqlError::config(format!("Cannot drop non existing keyspace '{name}'.")));
        }
        self.schema_generation += 1;
        Ok(true)
    }

    pub fn create_table(&mut self, ks: &str, stmt: &CreateTable) -> Result<bool, CqlError> {
        let name = &stmt.table.name;
        let Some(keyspace) = self.keyspaces.get(ks) else {
            return Err(CqlError::invalid(format!("Keyspace '{ks}' does not exist")));
        };
        let mut table = build_table(ks, stmt)?;
        if keyspace.tables.contains_key(name) {
            if stmt.if_not_exists {
                return Ok(false);
            }
            return Err(CqlError::already_exists(ks, name, format!("Table {ks}.{name} already exists")));
        }
        table.id = table_id(ks, name, self.schema_generation);
        if let Some(k) = self.keyspaces.get_mut(ks) {
            k.tables.insert(name.clone(), table);
        }
        self.schema_generation += 1;
        Ok(true)
    }

    pub fn drop_table(&mut self, ks: &str, name: &str, if_exists: bool) -> Result<bool, CqlError> {
        let removed = self.keyspaces.get_mut(ks).and_then(|k| k.tables.remove(name)).is_some();
        if !removed {
            if if_exists {
                return Ok(false);
            }
            return Err(CqlError::invalid(format!("Cannot drop non existing table '{name}' in keyspace '{ks}'.")));
        }
        self.schema_generation += 1;
        Ok(true)
    }
}

/// Validates a CREATE TABLE and builds the (empty) table.
pub fn build_table(ks: &str, stmt: &CreateTable) -> Result<Table, CqlError> {
    let name = &stmt.table.name;
    let mut columns: Vec<Column> = Vec::new();
    let mut seen = HashSet::new();
    for c in &stmt.columns {
        if !seen.insert(c.name.clone()) {
            return Err(CqlError::invalid(format!("Multiple definition of identifier {}", c.name)));
        }
        columns.push(Column { name: c.name.clone(), typ: CqlType::from_user_name(&c.type_name)?, kind: ColumnKind::Regular });
    }
    if stmt.partition_key.is_empty() {
        return Err(CqlError::invalid("No PRIMARY KEY specifed (exactly one required)"));
    }
    let find = |n: &str, cols: &[Column]| {
        cols.iter().position(|c| c.name == n).ok_or_else(|| CqlError::invalid(format!("Unknown definition {n} referenced in PRIMARY KEY")))
    };
    let mut partition_key = Vec::new();
    for (i, n) in stmt.partition_key.iter().enumerate() {
        let idx = find(n, &columns)?;
        if columns[idx].kind != ColumnKind::Regular {
            return Err(CqlError::invalid(format!("Duplicate definition for {n} in PRIMARY KEY")));
        }
        columns[idx].kind = ColumnKind::PartitionKey(i);
        partition_key.push(idx);
    }
    let mut clustering = Vec::new();
    for (i, n) in stmt.clustering.iter().enumerate() {
        let idx = find(n, &columns)?;
        if columns[idx].kind != ColumnKind::Regular {
            return Err(CqlError::invalid(format!("Duplicate definition for {n} in PRIMARY KEY")));
        }
        columns[idx].kind = ColumnKind::Clustering(i);
        clustering.push(idx);
    }
    let mut clustering_desc = vec![false; clustering.len()];
    if !stmt.clustering_order.is_empty() {
        if stmt.clustering_order.len() > clustering.len() {
            return Err(CqlError::invalid("Only clustering key columns can be defined in CLUSTERING ORDER directive"));
        }
        for (i, (n, desc)) in stmt.clustering_order.iter().enumerate() {
            if columns[clustering[i]].name != *n {
                return Err(CqlError::invalid(format!(
                    "The order of columns in the CLUSTERING ORDER directive must be the one of the clustering key ({n} must appear as {})",
                    columns[clustering[i]].name
                )));
            }
            clustering_desc[i] = *desc;
        }
    }
    let mut comment = String::new();
    for (opt, value) in &stmt.options {
        match opt.as_str() {
            "default_time_to_live" => {
                let ttl = match value {
                    PropValue::Const(l) => lit_text(l).and_then(|s| s.parse::<i64>().ok()),
                    _ => None,
                };
                match ttl {
                    Some(0) => {}
                    Some(_) => return Err(CqlError::unsupported_invalid("a non-zero default_time_to_live (TTL)")),
                    None => return Err(CqlError::syntax("Invalid value for default_time_to_live")),
                }
            }
            "comment" => {
                if let PropValue::Const(Literal::Str(s)) = value {
                    comment = s.clone();
                }
            }
            o if IGNORED_TABLE_OPTIONS.contains(&o) => {
                if o == "cdc"
                    && let PropValue::Map(entries) = value
                    && entries.iter().any(|(k, v)| lit_text(k).as_deref() == Some("enabled") && lit_text(v).as_deref() == Some("true"))
                {
                    return Err(CqlError::unsupported_invalid("CDC"));
                }
            }
            other => return Err(CqlError::syntax(format!("Unknown property '{other}'"))),
        }
    }
    Ok(Table {
        keyspace: ks.to_owned(),
        name: name.clone(),
        id: [0; 16],
        columns,
        partition_key,
        clustering,
        clustering_desc,
        comment,
        partitions: BTreeMap::new(),
    })
}

/// Validates a CREATE KEYSPACE and builds the (empty) keyspace.
pub fn build_keyspace(stmt: &CreateKeyspace, datacenter: &str) -> Result<Keyspace, CqlError> {
    if SYSTEM_KEYSPACES.contains(&stmt.name.as_str()) {
        return Err(CqlError::unauthorized(format!("Cannot create system keyspace {}", stmt.name)));
    }
    let mut replication = None;
    let mut durable_writes = true;
    for (name, value) in &stmt.options {
        match name.as_str() {
            "replication" => {
                let PropValue::Map(entries) = value else {
                    return Err(CqlError::syntax("replication must be a map"));
                };
                let mut map = BTreeMap::new();
                for (k, v) in entries {
                    let (Some(k), Some(v)) = (lit_text(k), lit_text(v)) else {
                        return Err(CqlError::syntax("replication options must be strings"));
                    };
                    map.insert(k, v);
                }
                replication = Some(validate_replication(&stmt.name, map, datacenter)?);
            }
            "durable_writes" => durable_writes = prop_bool(name, value)?,
            "tablets" => {
                // ScyllaDB-only; accepted in either form. Tablets are irrelevant in memory.
                if !matches!(value, PropValue::Map(_)) {
                    return Err(CqlError::syntax("tablets must be a map"));
                }
            }
            other => return Err(CqlError::syntax(format!("Unknown property '{other}'"))),
        }
    }
    let replication = replication.ok_or_else(|| CqlError::config("Missing mandatory replication strategy class"))?;
    Ok(Keyspace { name: stmt.name.clone(), replication, durable_writes, tables: BTreeMap::new() })
}

fn validate_replication(ks: &str, mut map: BTreeMap<String, String>, datacenter: &str) -> Result<BTreeMap<String, String>, CqlError> {
    let class = map.remove("class").ok_or_else(|| CqlError::config("Missing mandatory replication strategy class"))?;
    let short = class.rsplit('.').next().unwrap_or(&class).to_owned();
    let rf_ok = |v: &str| v.parse::<u32>().is_ok();
    match short.as_str() {
        "SimpleStrategy" => {
            let rf = map
                .get("replication_factor")
                .ok_or_else(|| CqlError::config("SimpleStrategy requires a replication_factor strategy option."))?;
            if !rf_ok(rf) {
                return Err(CqlError::config(format!("Replication factor must be non-negative; found {rf}")));
            }
            if let Some(k) = map.keys().find(|k| *k != "replication_factor") {
                return Err(CqlError::config(format!("Unrecognized strategy option {{{k}}} passed to SimpleStrategy for keyspace {ks}")));
            }
        }
        "NetworkTopologyStrategy" => {
            for (k, v) in &map {
                if k == "replication_factor" {
                    continue;
                }
                if k != datacenter {
                    return Err(CqlError::config(format!(
                        "Unrecognized strategy option {{{k}}} passed to NetworkTopologyStrategy for keyspace {ks} (the stand-in's only datacenter is '{datacenter}')"
                    )));
                }
                if !rf_ok(v) {
                    return Err(CqlError::config(format!("Replication factor must be non-negative; found {v}")));
                }
            }
            // Like Cassandra, a bare replication_factor expands to every datacenter.
            if let Some(rf) = map.remove("replication_factor") {
                if !rf_ok(&rf) {
                    return Err(CqlError::config(format!("Replication factor must be non-negative; found {rf}")));
                }
                map.entry(datacenter.to_owned()).or_insert(rf);
            }
        }
        other => return Err(CqlError::config(format!("Unable to find replication strategy class '{other}'"))),
    }
    map.insert("class".into(), format!("org.apache.cassandra.locator.{short}"));
    Ok(map)
}

fn table_id(ks: &str, name: &str, generation: u64) -> [u8; 16] {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ks, name, generation).hash(&mut h);
    let a = h.finish();
    (name, ks, generation).hash(&mut h);
    let b = h.finish();
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&a.to_be_bytes());
    u[8..].copy_from_slice(&b.to_be_bytes());
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}
