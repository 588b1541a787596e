//! Read-only system tables: what the driver reads at connect and on metadata refresh.
//!
//! `system.local` describes the one node; `system.peers` and `system.peers_v2` are empty;
//! `system_schema.keyspaces/tables/columns` reflect the DDL executed so far, and `views`/`types`
//! are empty. ScyllaDB-only tables (`system_schema.scylla_tables`, `scylla_keyspaces`, ...) do not
//! exist, so the driver treats the stand-in as a plain Cassandra node.

use crate::store::{ColumnKind, SYSTEM_KEYSPACES, Store};
use crate::types::{CqlType, encode_collection, encode_map};
use std::net::IpAddr;

/// What `system.local` says about the node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub rpc_address: IpAddr,
    pub datacenter: String,
    pub rack: String,
    pub host_id: [u8; 16],
    pub cluster_name: String,
    pub tokens: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct SysTable {
    pub keyspace: &'static str,
    pub name: &'static str,
    pub columns: Vec<(&'static str, CqlType)>,
}

impl SysTable {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| *n == name)
    }
}

fn text() -> CqlType {
    CqlType::Text
}

fn set_text() -> CqlType {
    CqlType::Set(Box::new(CqlType::Text))
}

fn list_text() -> CqlType {
    CqlType::List(Box::new(CqlType::Text))
}

fn map_text() -> CqlType {
    CqlType::Map(Box::new(CqlType::Text), Box::new(CqlType::Text))
}

/// Is this one of the (read-only) system keyspaces?
pub fn is_system_keyspace(ks: &str) -> bool {
    SYSTEM_KEYSPACES.contains(&ks)
}

pub fn lookup(ks: &str, name: &str) -> Option<SysTable> {
    use CqlType::*;
    let columns: Vec<(&'static str, CqlType)> = match (ks, name) {
        ("system", "local") => vec![
            ("key", text()),
            ("bootstrapped", text()),
            ("broadcast_address", Inet),
            ("cluster_name", text()),
            ("cql_version", text()),
            ("data_center", text()),
            ("host_id", Uuid),
            ("listen_address", Inet),
            ("native_protocol_version", text()),
            ("partitioner", text()),
            ("rack", text()),
            ("release_version", text()),
            ("rpc_address", Inet),
            ("schema_version", Uuid),
            ("tokens", set_text()),
        ],
        ("system", "peers") => vec![
            ("peer", Inet),
            ("data_center", text()),
            ("host_id", Uuid),
            ("preferred_ip", Inet),
            ("rack", text()),
            ("release_version", text()),
            ("rpc_address", Inet),
            ("schema_version", Uuid),
            ("tokens", set_text()),
        ],
        ("system", "peers_v2") => vec![
            ("peer", Inet),
            ("peer_port", Int),
            ("data_center", text()),
            ("host_id", Uuid),
            ("native_address", Inet),
            ("native_port", Int),
            ("preferred_ip", Inet),
            ("preferred_port", Int),
            ("rack", text()),
            ("release_version", text()),
            ("schema_version", Uuid),
            ("tokens", set_text()),
        ],
        ("system_schema", "keyspaces") => {
            vec![("keyspace_name", text()), ("durable_writes", Boolean), ("replication", map_text())]
        }
        ("system_schema", "tables") => vec![
            ("keyspace_name", text()),
            ("table_name", text()),
            ("comment", text()),
            ("default_time_to_live", Int),
            ("flags", set_text()),
            ("gc_grace_seconds", Int),
            ("id", Uuid),
        ],
        ("system_schema", "columns") => vec![
            ("keyspace_name", text()),
            ("table_name", text()),
            ("column_name", text()),
            ("clustering_order", text()),
            ("column_name_bytes", Blob),
            ("kind", text()),
            ("position", Int),
            ("type", text()),
        ],
        ("system_schema", "views") => vec![
            ("keyspace_name", text()),
            ("view_name", text()),
            ("base_table_id", Uuid),
            ("base_table_name", text()),
            ("include_all_columns", Boolean),
            ("where_clause", text()),
        ],
        ("system_schema", "types") => {
            vec![("keyspace_name", text()), ("type_name", text()), ("field_names", list_text()), ("field_types", list_text())]
        }
        _ => return None,
    };
    let keyspace = if ks == "system" { "system" } else { "system_schema" };
    let name: &'static str = match name {
        "local" => "local",
        "peers" => "peers",
        "peers_v2" => "peers_v2",
        "keyspaces" => "keyspaces",
        "tables" => "tables",
        "columns" => "columns",
        "views" => "views",
        "types" => "types",
        _ => return None,
    };
    Some(SysTable { keyspace, name, columns })
}

fn t(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn inet(ip: IpAddr) -> Option<Vec<u8>> {
    Some(match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    })
}

/// All rows of a system table, in the table's column order.
pub fn rows(table: &SysTable, store: &Store, node: &NodeInfo) -> Vec<Vec<Option<Vec<u8>>>> {
    match (table.keyspace, table.name) {
        ("system", "local") => {
            let tokens: Vec<String> = node.tokens.iter().map(|t| t.to_string()).collect();
            vec![vec![
                t("local"),
                t("COMPLETED"),
                inet(node.rpc_address),
                t(&node.cluster_name),
                t("3.3.1"),
                t(&node.datacenter),
                Some(node.host_id.to_vec()),
                inet(node.rpc_address),
                t("4"),
                t("org.apache.cassandra.dht.Murmur3Partitioner"),
                t(&node.rack),
                t("3.0.8"),
                inet(node.rpc_address),
                Some(store.schema_version().to_vec()),
                Some(encode_collection(tokens.iter().map(|s| s.as_bytes()))),
            ]]
        }
        ("system_schema", "keyspaces") => {
            let mut out = Vec::new();
            for ks in ["system", "system_schema"] {
                let class = b"org.apache.cassandra.locator.LocalStrategy".as_slice();
                out.push(vec![t(ks), Some(vec![1]), Some(encode_map([(b"class".as_slice(), class)]))]);
            }
            for ks in store.keyspaces.values() {
                out.push(vec![
                    t(&ks.name),
                    Some(vec![u8::from(ks.durable_writes)]),
                    Some(encode_map(ks.replication.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))),
                ]);
            }
            out
        }
        ("system_schema", "tables") => {
            let mut out = Vec::new();
            for ks in store.keyspaces.values() {
                for table in ks.tables.values() {
                    out.push(vec![
                        t(&ks.name),
                        t(&table.name),
                        t(&table.comment),
                        Some(0i32.to_be_bytes().to_vec()),
                        Some(encode_collection([b"compound".as_slice()])),
                        Some(864_000i32.to_be_bytes().to_vec()),
                        Some(table.id.to_vec()),
                    ]);
                }
            }
            out
        }
        ("system_schema", "columns") => {
            let mut out = Vec::new();
            for ks in store.keyspaces.values() {
                for table in ks.tables.values() {
                    let mut cols: Vec<usize> = (0..table.columns.len()).collect();
                    cols.sort_by(|&a, &b| table.columns[a].name.cmp(&table.columns[b].name));
                    for i in cols {
                        let c = &table.columns[i];
                        let (kind, position, order) = match c.kind {
                            ColumnKind::PartitionKey(p) => ("partition_key", p as i32, "none"),
                            ColumnKind::Clustering(p) => ("clustering", p as i32, if table.clustering_desc[p] { "desc" } else { "asc" }),
                            ColumnKind::Regular => ("regular", -1, "none"),
                        };
                        out.push(vec![
                            t(&ks.name),
                            t(&table.name),
                            t(&c.name),
                            t(order),
                            Some(c.name.as_bytes().to_vec()),
                            t(kind),
                            Some(position.to_be_bytes().to_vec()),
                            t(&c.typ.cql_name()),
                        ]);
                    }
                }
            }
            out
        }
        // peers, peers_v2, views, types: a single node with no views or user types.
        _ => Vec::new(),
    }
}
