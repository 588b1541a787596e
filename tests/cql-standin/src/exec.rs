//! Planning and execution of statements against the in-memory store.
//!
//! Every request runs while the caller holds the one lock on the store, so every statement and
//! batch is atomic and linearisable.

use crate::cql::{Condition, Delete, Insert, Op, Parsed, QualName, Relation, Rhs, Select, Selection, Statement, Term, Update};
use crate::error::CqlError;
use crate::store::{CellWrite, ColumnKind, Mutation, Partition, PartitionPos, Row, Store, Table};
use crate::system::{self, NodeInfo, SysTable};
use crate::types::{CqlType, decode_collection};
use crate::wire::{Consistency, RawValue};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::ops::Bound;

/// Shape of the result of a conditional statement or batch (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LwtStyle {
    /// ScyllaDB: always `[applied]` plus the old values of a fixed set of columns, whether applied
    /// or not; one row per statement (a batch: one row per statement of the batch, in order).
    #[default]
    Scylla,
    /// Apache Cassandra: `[applied]` alone when applied or when there is no old row; otherwise
    /// `[applied]` plus the existing row's columns.
    Cassandra,
}

#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub node: NodeInfo,
    pub lwt_style: LwtStyle,
}

/// Counters kept for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Conditional statements and conditional batches executed (each batch counts once).
    pub lwt: u64,
    pub lwt_applied: u64,
    pub lwt_not_applied: u64,
    /// Protocol BATCH requests executed (conditional or not).
    pub batches: u64,
    pub selects: u64,
    pub writes: u64,
    pub schema_changes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColSpec {
    pub keyspace: String,
    pub table: String,
    pub name: String,
    pub typ: CqlType,
}

/// The cells of one result row (None: null).
pub type Cells = Vec<Option<Vec<u8>>>;

#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Vec<ColSpec>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub paging_state: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Void,
    Rows(Rows),
    SetKeyspace(String),
    SchemaChange { change: &'static str, target: &'static str, keyspace: String, table: Option<String> },
}

/// Metadata returned by PREPARE.
#[derive(Debug, Clone)]
pub struct PreparedMeta {
    pub bind: Vec<ColSpec>,
    pub pk_indexes: Vec<u16>,
    /// None: the statement returns no rows ("no metadata").
    pub result: Option<Vec<ColSpec>>,
}

/// Per-request execution parameters.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub values: &'a [RawValue],
    pub page_size: Option<i32>,
    pub paging_state: Option<&'a [u8]>,
    pub consistency: Consistency,
}

// ---------------------------------------------------------------------------------------------
// Resolution and binding

enum Target<'s> {
    User(&'s Table),
    System(SysTable),
}

fn keyspace_of(ks: Option<&str>, q: &QualName) -> Result<String, CqlError> {
    match (&q.keyspace, ks) {
        (Some(k), _) => Ok(k.clone()),
        (None, Some(k)) => Ok(k.to_owned()),
        (None, None) => Err(CqlError::invalid("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename")),
    }
}

fn resolve<'s>(store: &'s Store, ks: Option<&str>, q: &QualName) -> Result<Target<'s>, CqlError> {
    let keyspace = keyspace_of(ks, q)?;
    if system::is_system_keyspace(&keyspace) {
        return system::lookup(&keyspace, &q.name)
            .map(Target::System)
            .ok_or_else(|| CqlError::invalid(format!("unconfigured table {} (not served by the CQL stand-in)", q.name)));
    }
    if !store.keyspaces.contains_key(&keyspace) {
        return Err(CqlError::invalid(format!("Keyspace {keyspace} does not exist")));
    }
    store.table(&keyspace, &q.name).map(Target::User).ok_or_else(|| CqlError::invalid(format!("unconfigured table {}", q.name)))
}

fn user_table<'s>(store: &'s Store, ks: Option<&str>, q: &QualName) -> Result<&'s Table, CqlError> {
    match resolve(store, ks, q)? {
        Target::User(t) => Ok(t),
        Target::System(t) => {
            Err(CqlError::unauthorized(format!("{}.{} is a read-only system table in the CQL stand-in", t.keyspace, t.name)))
        }
    }
}

fn spec(table: &Table, col: usize) -> ColSpec {
    ColSpec {
        keyspace: table.keyspace.clone(),
        table: table.name.clone(),
        name: table.columns[col].name.clone(),
        typ: table.columns[col].typ.clone(),
    }
}

fn applied_spec(table: &Table) -> ColSpec {
    ColSpec { keyspace: table.keyspace.clone(), table: table.name.clone(), name: "[applied]".into(), typ: CqlType::Boolean }
}

/// Types of the bind markers, filled while planning.
struct Markers {
    specs: Vec<Option<ColSpec>>,
}

impl Markers {
    fn new(n: usize) -> Self {
        Markers { specs: vec![None; n] }
    }

    /// Records the type of a bind marker, or checks a literal against the type.
    fn set(&mut self, term: &Term, spec: ColSpec) -> Result<(), CqlError> {
        match term {
            Term::Bind(i) => {
                if let Some(slot) = self.specs.get_mut(*i) {
                    *slot = Some(spec);
                }
            }
            Term::Lit(l) => {
                spec.typ.literal_value(l, &spec.name)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<ColSpec>, CqlError> {
        self.specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.ok_or_else(|| CqlError::invalid(format!("cannot infer the type of bind marker {i}"))))
            .collect()
    }
}

enum BoundValue {
    Val(Vec<u8>),
    Null,
    Unset,
}

fn eval(term: &Term, typ: &CqlType, name: &str, values: &[RawValue]) -> Result<BoundValue, CqlError> {
    match term {
        Term::Lit(l) => Ok(match typ.literal_value(l, name)? {
            Some(v) => BoundValue::Val(v),
            None => BoundValue::Null,
        }),
        Term::Bind(i) => match values.get(*i) {
            None => Err(CqlError::invalid(format!("no value bound for marker {i} (column {name})"))),
            Some(RawValue::Null) => Ok(BoundValue::Null),
            Some(RawValue::Unset) => Ok(BoundValue::Unset),
            Some(RawValue::Bytes(b)) => {
                typ.validate(b).map_err(|e| CqlError::invalid(format!("Invalid value for {name}: {e}")))?;
                Ok(BoundValue::Val(b.clone()))
            }
        },
    }
}

/// A value that must be present (keys, range bounds).
fn eval_required(term: &Term, typ: &CqlType, name: &str, values: &[RawValue], what: &str) -> Result<Vec<u8>, CqlError> {
    match eval(term, typ, name, values)? {
        BoundValue::Val(v) => Ok(v),
        BoundValue::Null => Err(CqlError::invalid(format!("Invalid null value {what} {name}"))),
        BoundValue::Unset => Err(CqlError::invalid(format!("Invalid unset value {what} {name}"))),
    }
}

fn eval_key(table: &Table, col: usize, term: &Term, values: &[RawValue]) -> Result<Vec<u8>, CqlError> {
    let c = &table.columns[col];
    let v = eval_required(term, &c.typ, &c.name, values, "for key column")?;
    if table.partition_key.len() == 1 && table.partition_key[0] == col && v.is_empty() {
        return Err(CqlError::invalid("Key may not be empty"));
    }
    Ok(v)
}

fn eval_limit(term: &Option<Term>, values: &[RawValue]) -> Result<Option<usize>, CqlError> {
    let Some(term) = term else { return Ok(None) };
    match eval(term, &CqlType::Int, "[limit]", values)? {
        BoundValue::Unset => Ok(None),
        BoundValue::Null => Err(CqlError::invalid("Invalid null value of limit")),
        BoundValue::Val(v) => {
            let n = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            if n <= 0 {
                return Err(CqlError::invalid("LIMIT must be strictly positive"));
            }
            Ok(Some(n as usize))
        }
    }
}

fn limit_spec(ks: &str, table: &str) -> ColSpec {
    ColSpec { keyspace: ks.to_owned(), table: table.to_owned(), name: "[limit]".into(), typ: CqlType::Int }
}

fn column(table: &Table, name: &str) -> Result<usize, CqlError> {
    table.column_index(name).ok_or_else(|| CqlError::invalid(format!("Undefined column name {name}")))
}

// ---------------------------------------------------------------------------------------------
// SELECT on user tables

struct RangeBound {
    term: Term,
    inclusive: bool,
}

struct UserSelect {
    /// None for count(*).
    outputs: Option<Vec<(usize, String)>>,
    pk: Option<Vec<Term>>,
    ck_eq: Vec<Term>,
    /// (clustering position, lower, upper)
    range: Option<(usize, Option<RangeBound>, Option<RangeBound>)>,
    reversed: bool,
    limit: Option<Term>,
}

fn plan_user_select(table: &Table, s: &Select, m: &mut Markers) -> Result<UserSelect, CqlError> {
    let outputs = match &s.selection {
        Selection::Star => Some(table.all_columns_order().into_iter().map(|c| (c, table.columns[c].name.clone())).collect()),
        Selection::CountStar => None,
        Selection::Columns(cols) => {
            let mut out = Vec::new();
            for (name, alias) in cols {
                let c = column(table, name)?;
                out.push((c, alias.clone().unwrap_or_else(|| name.clone())));
            }
            Some(out)
        }
    };
    let mut pk: Vec<Option<Term>> = vec![None; table.partition_key.len()];
    let mut ck_eq: Vec<Option<Term>> = vec![None; table.clustering.len()];
    let mut ck_lower: Vec<Option<RangeBound>> = (0..table.clustering.len()).map(|_| None).collect();
    let mut ck_upper: Vec<Option<RangeBound>> = (0..table.clustering.len()).map(|_| None).collect();
    for Relation { column: name, op, rhs } in &s.relations {
        let c = column(table, name)?;
        let term = match rhs {
            Rhs::Term(t) => t,
            Rhs::In(..) => return Err(CqlError::unsupported_invalid(format!("IN restrictions (on column {name})"))),
        };
        m.set(term, spec(table, c))?;
        match table.columns[c].kind {
            ColumnKind::PartitionKey(i) => {
                if *op != Op::Eq {
                    return Err(CqlError::invalid(format!(
                        "Only EQ relations are supported on the partition key (column {name}); token() and IN are not supported by the CQL stand-in"
                    )));
                }
                if pk[i].is_some() {
                    return Err(CqlError::invalid(format!(
                        "{name} cannot be restricted by more than one relation if it includes an Equal"
                    )));
                }
                pk[i] = Some(term.clone());
            }
            ColumnKind::Clustering(i) => {
                let dup = || CqlError::invalid(format!("More than one restriction was found for the {} bound on {name}", op.as_str()));
                let slot = match op {
                    Op::Eq => {
                        if ck_eq[i].is_some() || ck_lower[i].is_some() || ck_upper[i].is_some() {
                            return Err(CqlError::invalid(format!(
                                "{name} cannot be restricted by more than one relation if it includes an Equal"
                            )));
                        }
                        ck_eq[i] = Some(term.clone());
                        continue;
                    }
                    Op::Gt | Op::Ge => &mut ck_lower[i],
                    Op::Lt | Op::Le => &mut ck_upper[i],
                    Op::Ne => return Err(CqlError::unsupported_invalid("!= in WHERE")),
                };
                if slot.is_some() || ck_eq[i].is_some() {
                    return Err(dup());
                }
                *slot = Some(RangeBound { term: term.clone(), inclusive: matches!(op, Op::Ge | Op::Le) });
            }
            ColumnKind::Regular => {
                return Err(CqlError::invalid(format!(
                    "Restriction on the non-primary-key column {name} requires ALLOW FILTERING or a secondary index, neither of which the CQL stand-in supports"
                )));
            }
        }
    }
    let restricted_pk = pk.iter().filter(|t| t.is_some()).count();
    let any_ck = ck_eq.iter().any(Option::is_some) || ck_lower.iter().any(Option::is_some) || ck_upper.iter().any(Option::is_some);
    let pk = if restricted_pk == pk.len() {
        Some(pk.into_iter().flatten().collect::<Vec<_>>())
    } else if restricted_pk == 0 && !any_ck {
        None
    } else {
        return Err(CqlError::invalid(
            "Cannot execute this query as it might involve data filtering: the CQL stand-in needs every partition key column restricted by equality (or no restriction at all for a full scan)",
        ));
    };
    // Clustering: an EQ prefix, then optionally a range on the next column, nothing after.
    let mut eq_prefix = Vec::new();
    let mut range = None;
    let mut ended: Option<String> = None;
    for i in 0..table.clustering.len() {
        let name = &table.columns[table.clustering[i]].name;
        let has = ck_eq[i].is_some() || ck_lower[i].is_some() || ck_upper[i].is_some();
        if let Some(prev) = &ended {
            if has {
                return Err(CqlError::invalid(format!(
                    "Clustering column \"{name}\" cannot be restricted (preceding column \"{prev}\" is restricted by a non-EQ relation or not restricted)"
                )));
            }
            continue;
        }
        if let Some(t) = ck_eq[i].take() {
            eq_prefix.push(t);
        } else if has {
            range = Some((i, ck_lower[i].take(), ck_upper[i].take()));
            ended = Some(name.clone());
        } else {
            ended = Some(name.clone());
        }
    }
    let mut reversed = None;
    for (i, (name, desc)) in s.order_by.iter().enumerate() {
        if pk.is_none() {
            return Err(CqlError::invalid("ORDER BY is only supported when the partition key is restricted by an EQ or an IN."));
        }
        let c = column(table, name)?;
        match table.columns[c].kind {
            ColumnKind::Clustering(p) if p == i => {
                let rev = *desc != table.clustering_desc[p];
                if reversed.is_some_and(|r| r != rev) {
                    return Err(CqlError::invalid("Unsupported order by relation"));
                }
                reversed = Some(rev);
            }
            ColumnKind::Clustering(_) => {
                return Err(CqlError::invalid(
                    "Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY",
                ));
            }
            _ => {
                return Err(CqlError::invalid(format!(
                    "Order by is currently only supported on the clustered columns of the PRIMARY KEY, got {name}"
                )));
            }
        }
    }
    if let Some(l) = &s.limit {
        m.set(l, limit_spec(&table.keyspace, &table.name))?;
    }
    Ok(UserSelect { outputs, pk, ck_eq: eq_prefix, range, reversed: reversed.unwrap_or(false), limit: s.limit.clone() })
}

fn select_columns(table: &Table, plan: &UserSelect) -> Vec<ColSpec> {
    match &plan.outputs {
        None => vec![ColSpec { keyspace: table.keyspace.clone(), table: table.name.clone(), name: "count".into(), typ: CqlType::BigInt }],
        Some(outs) => outs.iter().map(|(c, name)| ColSpec { name: name.clone(), ..spec(table, *c) }).collect(),
    }
}

// Paging state: [1][u32 returned][i64 token][u32 n][pk bytes][u32 n][clustering encoding]
//            or [2][u32 returned][u32 offset] for system tables.
struct PagePos {
    returned: usize,
    partition: PartitionPos,
    row: Vec<u8>,
}

fn bad_paging_state() -> CqlError {
    CqlError::protocol("Invalid value for the paging state")
}

fn read_u32(b: &[u8], at: &mut usize) -> Result<u32, CqlError> {
    let s = b.get(*at..*at + 4).ok_or_else(bad_paging_state)?;
    *at += 4;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn encode_page_pos(p: &PagePos) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&(p.returned as u32).to_be_bytes());
    out.extend_from_slice(&p.partition.token.to_be_bytes());
    out.extend_from_slice(&(p.partition.key.len() as u32).to_be_bytes());
    out.extend_from_slice(&p.partition.key);
    out.extend_from_slice(&(p.row.len() as u32).to_be_bytes());
    out.extend_from_slice(&p.row);
    out
}

fn decode_page_pos(b: &[u8]) -> Result<PagePos, CqlError> {
    if b.first() != Some(&1) {
        return Err(bad_paging_state());
    }
    let mut at = 1;
    let returned = read_u32(b, &mut at)? as usize;
    let t = b.get(at..at + 8).ok_or_else(bad_paging_state)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(t);
    at += 8;
    let n = read_u32(b, &mut at)? as usize;
    let key = b.get(at..at + n).ok_or_else(bad_paging_state)?.to_vec();
    at += n;
    let n = read_u32(b, &mut at)? as usize;
    let row = b.get(at..at + n).ok_or_else(bad_paging_state)?.to_vec();
    if at + n != b.len() {
        return Err(bad_paging_state());
    }
    Ok(PagePos { returned, partition: PartitionPos { token: i64::from_be_bytes(a), key }, row })
}

type RowIter<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Row)> + 'a>;

fn partition_rows<'a>(part: &'a Partition, reversed: bool, after: Option<&[u8]>) -> RowIter<'a> {
    match (reversed, after) {
        (false, None) => Box::new(part.rows.iter()),
        (false, Some(a)) => Box::new(part.rows.range::<[u8], _>((Bound::Excluded(a), Bound::Unbounded))),
        (true, None) => Box::new(part.rows.iter().rev()),
        (true, Some(a)) => Box::new(part.rows.range::<[u8], _>((Bound::Unbounded, Bound::Excluded(a))).rev()),
    }
}

fn run_user_select(table: &Table, plan: &UserSelect, req: &Request<'_>) -> Result<Rows, CqlError> {
    let values = req.values;
    let pk = match &plan.pk {
        Some(terms) => {
            let mut v = Vec::new();
            for (i, t) in terms.iter().enumerate() {
                v.push(eval_key(table, table.partition_key[i], t, values)?);
            }
            Some(v)
        }
        None => None,
    };
    let mut ck_eq = Vec::new();
    for (i, t) in plan.ck_eq.iter().enumerate() {
        ck_eq.push(eval_key(table, table.clustering[i], t, values)?);
    }
    let mut range = None;
    if let Some((pos, lo, hi)) = &plan.range {
        let col = &table.columns[table.clustering[*pos]];
        let b = |rb: &Option<RangeBound>| -> Result<Option<(Vec<u8>, bool)>, CqlError> {
            match rb {
                None => Ok(None),
                Some(rb) => Ok(Some((eval_required(&rb.term, &col.typ, &col.name, values, "for column")?, rb.inclusive))),
            }
        };
        range = Some((*pos, col.typ.clone(), b(lo)?, b(hi)?));
    }
    let limit = eval_limit(&plan.limit, values)?;
    let matches = |row: &Row| -> bool {
        for (i, v) in ck_eq.iter().enumerate() {
            if row.clustering[i] != *v {
                return false;
            }
        }
        if let Some((pos, typ, lo, hi)) = &range {
            let v = &row.clustering[*pos];
            if let Some((b, incl)) = lo {
                match typ.compare(v, b) {
                    Ordering::Less => return false,
                    Ordering::Equal if !incl => return false,
                    _ => {}
                }
            }
            if let Some((b, incl)) = hi {
                match typ.compare(v, b) {
                    Ordering::Greater => return false,
                    Ordering::Equal if !incl => return false,
                    _ => {}
                }
            }
        }
        true
    };
    let resume = match req.paging_state {
        Some(b) if plan.outputs.is_some() => Some(decode_page_pos(b)?),
        _ => None,
    };
    // All matching rows, in result order, starting after the paging position.
    let single_pos = pk.as_ref().map(|pk| table.partition_pos(pk));
    let parts: Box<dyn Iterator<Item = (&PartitionPos, &Partition)>> = match (&single_pos, &resume) {
        (Some(pos), _) => Box::new(table.partitions.get_key_value(pos).into_iter()),
        (None, Some(r)) => Box::new(table.partitions.range(r.partition.clone()..)),
        (None, None) => Box::new(table.partitions.iter()),
    };
    let reversed = plan.reversed;
    let mut matching = parts
        .flat_map(|(pos, part)| {
            let after = resume.as_ref().filter(|r| r.partition == *pos).map(|r| r.row.as_slice());
            partition_rows(part, reversed, after).map(move |(enc, row)| (pos, part, enc, row))
        })
        .filter(|(_, _, _, row)| matches(row));

    let Some(outputs) = &plan.outputs else {
        let n = matching.count() as i64;
        return Ok(Rows { columns: select_columns(table, plan), rows: vec![vec![Some(n.to_be_bytes().to_vec())]], paging_state: None });
    };
    let returned_before = resume.as_ref().map_or(0, |r| r.returned);
    let remaining = limit.map(|l| l.saturating_sub(returned_before));
    let page = req.page_size.map(|p| p as usize);
    let mut rows = Vec::new();
    let mut last: Option<(PartitionPos, Vec<u8>)> = None;
    let mut more = false;
    loop {
        if remaining.is_some_and(|r| rows.len() >= r) {
            break;
        }
        if page.is_some_and(|p| rows.len() >= p) {
            more = matching.next().is_some();
            break;
        }
        let Some((pos, part, enc, row)) = matching.next() else { break };
        rows.push(outputs.iter().map(|(c, _)| table.value_of(part, row, *c).map(<[u8]>::to_vec)).collect());
        last = Some((pos.clone(), enc.clone()));
    }
    let paging_state = match (more, last) {
        (true, Some((partition, row))) => Some(encode_page_pos(&PagePos { returned: returned_before + rows.len(), partition, row })),
        _ => None,
    };
    Ok(Rows { columns: select_columns(table, plan), rows, paging_state })
}

// ---------------------------------------------------------------------------------------------
// SELECT on system tables

struct SysSelect {
    outputs: Option<Vec<(usize, String)>>,
    /// (column, terms, the single term is a list marker)
    filters: Vec<(usize, Vec<Term>, bool)>,
    limit: Option<Term>,
}

fn sys_spec(t: &SysTable, col: usize) -> ColSpec {
    ColSpec { keyspace: t.keyspace.into(), table: t.name.into(), name: t.columns[col].0.into(), typ: t.columns[col].1.clone() }
}

fn plan_sys_select(t: &SysTable, s: &Select, m: &mut Markers) -> Result<SysSelect, CqlError> {
    let col = |name: &str| t.column_index(name).ok_or_else(|| CqlError::invalid(format!("Undefined column name {name}")));
    let outputs = match &s.selection {
        Selection::Star => Some((0..t.columns.len()).map(|i| (i, t.columns[i].0.to_owned())).collect()),
        Selection::CountStar => None,
        Selection::Columns(cols) => {
            let mut out = Vec::new();
            for (name, alias) in cols {
                out.push((col(name)?, alias.clone().unwrap_or_else(|| name.clone())));
            }
            Some(out)
        }
    };
    if !s.order_by.is_empty() {
        return Err(CqlError::unsupported_invalid("ORDER BY on system tables"));
    }
    let mut filters = Vec::new();
    for r in &s.relations {
        let c = col(&r.column)?;
        if r.op != Op::Eq {
            return Err(CqlError::unsupported_invalid(format!("the {} operator on system tables", r.op.as_str())));
        }
        match &r.rhs {
            Rhs::Term(term) => {
                m.set(term, sys_spec(t, c))?;
                filters.push((c, vec![term.clone()], false));
            }
            Rhs::In(terms, true) => {
                let mut s = sys_spec(t, c);
                s.name = format!("in({})", s.name);
                s.typ = CqlType::List(Box::new(s.typ));
                for term in terms {
                    m.set(term, s.clone())?;
                }
                filters.push((c, terms.clone(), true));
            }
            Rhs::In(terms, false) => {
                for term in terms {
                    m.set(term, sys_spec(t, c))?;
                }
                filters.push((c, terms.clone(), false));
            }
        }
    }
    if let Some(l) = &s.limit {
        m.set(l, limit_spec(t.keyspace, t.name))?;
    }
    Ok(SysSelect { outputs, filters, limit: s.limit.clone() })
}

fn run_sys_select(t: &SysTable, plan: &SysSelect, store: &Store, node: &NodeInfo, req: &Request<'_>) -> Result<Rows, CqlError> {
    let values = req.values;
    let mut filters = Vec::new();
    for (c, terms, list) in &plan.filters {
        let (name, typ) = &t.columns[*c];
        let mut allowed = Vec::new();
        for term in terms {
            if *list {
                let ltyp = CqlType::List(Box::new(typ.clone()));
                let v = eval_required(term, &ltyp, name, values, "for")?;
                allowed.extend(decode_collection(&v, false)?);
            } else {
                allowed.push(eval_required(term, typ, name, values, "for")?);
            }
        }
        filters.push((*c, allowed));
    }
    let limit = eval_limit(&plan.limit, values)?;
    let all: Vec<_> = system::rows(t, store, node)
        .into_iter()
        .filter(|row| filters.iter().all(|(c, allowed)| row[*c].as_ref().is_some_and(|v| allowed.contains(v))))
        .collect();
    let columns: Vec<ColSpec> = match &plan.outputs {
        None => {
            let n = all.len() as i64;
            let c = ColSpec { keyspace: t.keyspace.into(), table: t.name.into(), name: "count".into(), typ: CqlType::BigInt };
            return Ok(Rows { columns: vec![c], rows: vec![vec![Some(n.to_be_bytes().to_vec())]], paging_state: None });
        }
        Some(outs) => outs.iter().map(|(c, n)| ColSpec { name: n.clone(), ..sys_spec(t, *c) }).collect(),
    };
    let (returned, offset) = match req.paging_state {
        None => (0usize, 0usize),
        Some(b) => {
            if b.first() != Some(&2) || b.len() != 9 {
                return Err(bad_paging_state());
            }
            let mut at = 1;
            (read_u32(b, &mut at)? as usize, read_u32(b, &mut at)? as usize)
        }
    };
    let end_by_limit = limit.map_or(all.len(), |l| (offset + l.saturating_sub(returned)).min(all.len()));
    let end = req.page_size.map_or(end_by_limit, |p| (offset + p as usize).min(end_by_limit));
    let outs = plan.outputs.as_ref().map_or(&[][..], |o| o.as_slice());
    let rows: Vec<Vec<Option<Vec<u8>>>> =
        all[offset.min(end)..end].iter().map(|row| outs.iter().map(|(c, _)| row[*c].clone()).collect()).collect();
    let paging_state = (end < end_by_limit).then(|| {
        let mut b = vec![2u8];
        b.extend_from_slice(&((returned + rows.len()) as u32).to_be_bytes());
        b.extend_from_slice(&(end as u32).to_be_bytes());
        b
    });
    Ok(Rows { columns, rows, paging_state })
}

// ---------------------------------------------------------------------------------------------
// INSERT / UPDATE / DELETE

enum WriteKind {
    Insert,
    Update,
    /// Delete the row, or (with columns) some of its cells.
    Delete(Vec<usize>),
    DeletePartition,
}

enum CondPlan {
    Exists,
    NotExists,
    Columns(Vec<(usize, Op, Term)>),
}

struct WritePlan {
    kind: WriteKind,
    pk: Vec<Term>,
    ck: Vec<Term>,
    cells: Vec<(usize, Term)>,
    cond: Option<CondPlan>,
}

/// WHERE of UPDATE/DELETE: equality on every primary key column (or, for a DELETE of a whole
/// partition, on every partition key column only).
fn plan_key_relations(
    table: &Table,
    relations: &[Relation],
    m: &mut Markers,
    allow_partition: bool,
) -> Result<(Vec<Term>, Option<Vec<Term>>), CqlError> {
    let mut pk: Vec<Option<Term>> = vec![None; table.partition_key.len()];
    let mut ck: Vec<Option<Term>> = vec![None; table.clustering.len()];
    for Relation { column: name, op, rhs } in relations {
        let c = column(table, name)?;
        let term = match rhs {
            Rhs::Term(t) => t,
            Rhs::In(..) => return Err(CqlError::unsupported_invalid(format!("IN restrictions (on column {name})"))),
        };
        let slot = match table.columns[c].kind {
            ColumnKind::PartitionKey(i) => &mut pk[i],
            ColumnKind::Clustering(i) => &mut ck[i],
            ColumnKind::Regular => {
                return Err(CqlError::invalid(format!("Non PRIMARY KEY columns found in where clause: {name}")));
            }
        };
        if *op != Op::Eq {
            return Err(CqlError::unsupported_invalid(format!(
                "the {} relation on PRIMARY KEY part {name} in a modification (range deletions/updates)",
                op.as_str()
            )));
        }
        if slot.is_some() {
            return Err(CqlError::invalid(format!("{name} cannot be restricted by more than one relation if it includes an Equal")));
        }
        m.set(term, spec(table, c))?;
        *slot = Some(term.clone());
    }
    for (i, t) in pk.iter().enumerate() {
        if t.is_none() {
            return Err(CqlError::invalid(format!("Missing mandatory PRIMARY KEY part {}", table.columns[table.partition_key[i]].name)));
        }
    }
    let pk: Vec<Term> = pk.into_iter().flatten().collect();
    let given = ck.iter().filter(|t| t.is_some()).count();
    if given == ck.len() {
        return Ok((pk, Some(ck.into_iter().flatten().collect())));
    }
    if given == 0 && allow_partition {
        return Ok((pk, None));
    }
    let missing = ck.iter().position(Option::is_none).map_or(String::new(), |i| table.columns[table.clustering[i]].name.clone());
    if allow_partition {
        return Err(CqlError::unsupported_invalid(format!("a DELETE of a clustering range (missing PRIMARY KEY part {missing})")));
    }
    Err(CqlError::invalid(format!("Missing mandatory PRIMARY KEY part {missing}")))
}

fn plan_condition(table: &Table, cond: &Option<Condition>, m: &mut Markers) -> Result<Option<CondPlan>, CqlError> {
    Ok(match cond {
        None => None,
        Some(Condition::Exists) => Some(CondPlan::Exists),
        Some(Condition::Columns(cs)) => {
            let mut out = Vec::new();
            for (name, op, term) in cs {
                let c = column(table, name)?;
                if table.is_primary_key(c) {
                    return Err(CqlError::invalid(format!("PRIMARY KEY column '{name}' cannot have IF conditions")));
                }
                m.set(term, spec(table, c))?;
                out.push((c, *op, term.clone()));
            }
            Some(CondPlan::Columns(out))
        }
    })
}

fn plan_insert(table: &Table, s: &Insert, m: &mut Markers) -> Result<WritePlan, CqlError> {
    if s.columns.len() != s.values.len() {
        return Err(CqlError::invalid("Unmatched column names/values"));
    }
    let mut pk: Vec<Option<Term>> = vec![None; table.partition_key.len()];
    let mut ck: Vec<Option<Term>> = vec![None; table.clustering.len()];
    let mut cells = Vec::new();
    let mut seen = HashSet::new();
    for (name, term) in s.columns.iter().zip(&s.values) {
        let c = column(table, name)?;
        if !seen.insert(c) {
            return Err(CqlError::invalid(format!("Multiple definitions found for column {name}")));
        }
        m.set(term, spec(table, c))?;
        match table.columns[c].kind {
            ColumnKind::PartitionKey(i) => pk[i] = Some(term.clone()),
            ColumnKind::Clustering(i) => ck[i] = Some(term.clone()),
            ColumnKind::Regular => cells.push((c, term.clone())),
        }
    }
    if let Some(i) = pk.iter().position(Option::is_none) {
        return Err(CqlError::invalid(format!("Some partition key parts are missing: {}", table.columns[table.partition_key[i]].name)));
    }
    if let Some(i) = ck.iter().position(Option::is_none) {
        return Err(CqlError::invalid(format!("Some clustering keys are missing: {}", table.columns[table.clustering[i]].name)));
    }
    Ok(WritePlan {
        kind: WriteKind::Insert,
        pk: pk.into_iter().flatten().collect(),
        ck: ck.into_iter().flatten().collect(),
        cells,
        cond: s.if_not_exists.then_some(CondPlan::NotExists),
    })
}

fn plan_update(table: &Table, s: &Update, m: &mut Markers) -> Result<WritePlan, CqlError> {
    let mut cells = Vec::new();
    let mut seen = HashSet::new();
    for (name, term) in &s.assignments {
        let c = column(table, name)?;
        if table.is_primary_key(c) {
            return Err(CqlError::invalid(format!("PRIMARY KEY part {name} found in SET part")));
        }
        if !seen.insert(c) {
            return Err(CqlError::invalid(format!("Multiple incompatible setting of column {name}")));
        }
        m.set(term, spec(table, c))?;
        cells.push((c, term.clone()));
    }
    let (pk, ck) = plan_key_relations(table, &s.relations, m, false)?;
    let cond = plan_condition(table, &s.condition, m)?;
    Ok(WritePlan { kind: WriteKind::Update, pk, ck: ck.unwrap_or_default(), cells, cond })
}

fn plan_delete(table: &Table, s: &Delete, m: &mut Markers) -> Result<WritePlan, CqlError> {
    let mut cols = Vec::new();
    for name in &s.columns {
        let c = column(table, name)?;
        if table.is_primary_key(c) {
            return Err(CqlError::invalid(format!("Invalid identifier {name} for deletion (should not be a PRIMARY KEY part)")));
        }
        cols.push(c);
    }
    let (pk, ck) = plan_key_relations(table, &s.relations, m, cols.is_empty())?;
    let cond = plan_condition(table, &s.condition, m)?;
    match ck {
        Some(ck) => Ok(WritePlan { kind: WriteKind::Delete(cols), pk, ck, cells: Vec::new(), cond }),
        None => {
            if cond.is_some() {
                return Err(CqlError::invalid(
                    "DELETE statements must restrict all PRIMARY KEY columns with equality relations in order to use IF conditions",
                ));
            }
            Ok(WritePlan { kind: WriteKind::DeletePartition, pk, ck: Vec::new(), cells: Vec::new(), cond })
        }
    }
}

fn plan_write(table: &Table, stmt: &Statement, m: &mut Markers) -> Result<WritePlan, CqlError> {
    match stmt {
        Statement::Insert(s) => plan_insert(table, s, m),
        Statement::Update(s) => plan_update(table, s, m),
        Statement::Delete(s) => plan_delete(table, s, m),
        _ => Err(CqlError::server("not a modification statement")),
    }
}

/// A bound condition: (column, operator, value).
enum BoundCond {
    Exists,
    NotExists,
    Columns(Vec<(usize, Op, Option<Vec<u8>>)>),
}

struct BoundWrite {
    mutation: Mutation,
    cond: Option<BoundCond>,
}

fn bind_write(table: &Table, plan: &WritePlan, values: &[RawValue]) -> Result<BoundWrite, CqlError> {
    let mut pk = Vec::new();
    for (i, t) in plan.pk.iter().enumerate() {
        pk.push(eval_key(table, table.partition_key[i], t, values)?);
    }
    let mut ck = Vec::new();
    for (i, t) in plan.ck.iter().enumerate() {
        ck.push(eval_key(table, table.clustering[i], t, values)?);
    }
    let mut cells = Vec::new();
    for (c, term) in &plan.cells {
        let col = &table.columns[*c];
        match eval(term, &col.typ, &col.name, values)? {
            BoundValue::Val(v) => cells.push((*c, CellWrite::Set(v))),
            BoundValue::Null => cells.push((*c, CellWrite::Delete)),
            BoundValue::Unset => {}
        }
    }
    let mutation = match &plan.kind {
        WriteKind::Insert => Mutation::Upsert { pk, ck, marker: true, cells },
        WriteKind::Update => Mutation::Upsert { pk, ck, marker: false, cells },
        WriteKind::Delete(cols) if cols.is_empty() => Mutation::DeleteRow { pk, ck },
        WriteKind::Delete(cols) => {
            Mutation::Upsert { pk, ck, marker: false, cells: cols.iter().map(|c| (*c, CellWrite::Delete)).collect() }
        }
        WriteKind::DeletePartition => Mutation::DeletePartition { pk },
    };
    let cond = match &plan.cond {
        None => None,
        Some(CondPlan::Exists) => Some(BoundCond::Exists),
        Some(CondPlan::NotExists) => Some(BoundCond::NotExists),
        Some(CondPlan::Columns(cs)) => {
            let mut out = Vec::new();
            for (c, op, term) in cs {
                let col = &table.columns[*c];
                let v = match eval(term, &col.typ, &col.name, values)? {
                    BoundValue::Val(v) => Some(v),
                    BoundValue::Null => {
                        if !matches!(op, Op::Eq | Op::Ne) {
                            return Err(CqlError::invalid(format!("Invalid comparison with null for operator \"{}\"", op.as_str())));
                        }
                        None
                    }
                    BoundValue::Unset => return Err(CqlError::invalid(format!("Invalid 'unset' value in condition on {}", col.name))),
                };
                out.push((*c, *op, v));
            }
            Some(BoundCond::Columns(out))
        }
    };
    Ok(BoundWrite { mutation, cond })
}

fn cond_holds(table: &Table, cond: &BoundCond, row: Option<&Row>) -> bool {
    match cond {
        BoundCond::Exists => row.is_some(),
        BoundCond::NotExists => row.is_none(),
        BoundCond::Columns(cs) => cs.iter().all(|(c, op, v)| {
            let cell = row.and_then(|r| r.cells[*c].as_deref());
            match op {
                Op::Eq => cell == v.as_deref(),
                Op::Ne => cell != v.as_deref(),
                _ => match (cell, v) {
                    (Some(cell), Some(v)) => {
                        let o = table.columns[*c].typ.compare(cell, v);
                        match op {
                            Op::Lt => o == Ordering::Less,
                            Op::Le => o != Ordering::Greater,
                            Op::Gt => o == Ordering::Greater,
                            Op::Ge => o != Ordering::Less,
                            Op::Eq | Op::Ne => false,
                        }
                    }
                    _ => false,
                },
            }
        }),
    }
}

/// Columns a condition reports: all of them for `IF [NOT] EXISTS`, else the condition columns.
/// `table_order` sorts them in table order (ScyllaDB), otherwise they keep the order of the IF.
fn cas_columns(table: &Table, cond: &BoundCond, table_order: bool) -> Vec<usize> {
    match cond {
        BoundCond::Exists | BoundCond::NotExists => table.all_columns_order(),
        BoundCond::Columns(cs) => {
            let mut out: Vec<usize> = Vec::new();
            for (c, _, _) in cs {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
            if table_order {
                let order = table.all_columns_order();
                out.sort_by_key(|c| order.iter().position(|o| o == c));
            }
            out
        }
    }
}

fn bool_cell(b: bool) -> Option<Vec<u8>> {
    Some(vec![u8::from(b)])
}

fn row_values(table: &Table, part: Option<&Partition>, row: Option<&Row>, cols: &[usize]) -> Vec<Option<Vec<u8>>> {
    cols.iter()
        .map(|c| match (part, row) {
            (Some(p), Some(r)) => table.value_of(p, r, *c).map(<[u8]>::to_vec),
            _ => None,
        })
        .collect()
}

fn lookup<'t>(table: &'t Table, pk: &[Vec<u8>], ck: Option<&[Vec<u8>]>) -> (Option<&'t Partition>, Option<&'t Row>) {
    let part = table.partitions.get(&table.partition_pos(pk));
    let row = match (part, ck) {
        (Some(p), Some(ck)) => p.rows.get(&table.clustering_encoding(ck)),
        _ => None,
    };
    (part, row)
}

fn run_write(
    store: &mut Store,
    ks: &str,
    name: &str,
    w: BoundWrite,
    style: LwtStyle,
    counters: &mut Counters,
) -> Result<Outcome, CqlError> {
    let table = store.table_mut(ks, name).ok_or_else(|| CqlError::invalid(format!("unconfigured table {name}")))?;
    counters.writes += 1;
    let Some(cond) = &w.cond else {
        w.mutation.apply(table);
        return Ok(Outcome::Void);
    };
    let (part, row) = lookup(table, w.mutation.pk(), w.mutation.ck());
    let applies = cond_holds(table, cond, row);
    let cols = cas_columns(table, cond, style == LwtStyle::Scylla);
    let mut columns = vec![applied_spec(table)];
    let mut out_row = vec![bool_cell(applies)];
    match style {
        LwtStyle::Scylla => {
            columns.extend(cols.iter().map(|c| spec(table, *c)));
            out_row.extend(row_values(table, part, row, &cols));
        }
        LwtStyle::Cassandra => {
            if !applies && row.is_some() {
                columns.extend(cols.iter().map(|c| spec(table, *c)));
                out_row.extend(row_values(table, part, row, &cols));
            }
        }
    }
    counters.lwt += 1;
    if applies {
        counters.lwt_applied += 1;
        w.mutation.apply(table);
    } else {
        counters.lwt_not_applied += 1;
    }
    Ok(Outcome::Rows(Rows { columns, rows: vec![out_row], paging_state: None }))
}

// ---------------------------------------------------------------------------------------------
// Entry points

fn check_values(parsed: &Parsed, values: &[RawValue]) -> Result<(), CqlError> {
    if values.len() != parsed.markers {
        return Err(CqlError::invalid(format!("Invalid amount of bind variables: expected {}, got {}", parsed.markers, values.len())));
    }
    Ok(())
}

fn check_write_consistency(c: Consistency) -> Result<(), CqlError> {
    if c.is_serial() {
        return Err(CqlError::invalid(format!(
            "{c:?} is not supported as the consistency of a write (use a serial consistency for conditional updates)"
        )));
    }
    Ok(())
}

/// The metadata of a PREPARE.
pub fn prepare(store: &Store, cfg: &ExecConfig, ks: Option<&str>, parsed: &Parsed) -> Result<PreparedMeta, CqlError> {
    let mut m = Markers::new(parsed.markers);
    let mut pk_indexes = Vec::new();
    let result = match &parsed.statement {
        Statement::Select(s) => match resolve(store, ks, &s.table)? {
            Target::User(t) => {
                let plan = plan_user_select(t, s, &mut m)?;
                if let Some(terms) = &plan.pk {
                    pk_indexes = marker_indexes(terms);
                }
                Some(select_columns(t, &plan))
            }
            Target::System(t) => {
                let plan = plan_sys_select(&t, s, &mut m)?;
                Some(match &plan.outputs {
                    None => vec![ColSpec { keyspace: t.keyspace.into(), table: t.name.into(), name: "count".into(), typ: CqlType::BigInt }],
                    Some(outs) => outs.iter().map(|(c, n)| ColSpec { name: n.clone(), ..sys_spec(&t, *c) }).collect(),
                })
            }
        },
        stmt @ (Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)) => {
            let table = user_table(store, ks, stmt.table().ok_or_else(|| CqlError::server("no table"))?)?;
            let plan = plan_write(table, stmt, &mut m)?;
            pk_indexes = marker_indexes(&plan.pk);
            match (&plan.cond, cfg.lwt_style) {
                (Some(cond), LwtStyle::Scylla) => {
                    let cols = match cond {
                        CondPlan::Exists | CondPlan::NotExists => table.all_columns_order(),
                        CondPlan::Columns(cs) => {
                            let bc = BoundCond::Columns(cs.iter().map(|(c, o, _)| (*c, *o, None)).collect());
                            cas_columns(table, &bc, true)
                        }
                    };
                    let mut out = vec![applied_spec(table)];
                    out.extend(cols.iter().map(|c| spec(table, *c)));
                    Some(out)
                }
                _ => None,
            }
        }
        // DDL is validated when prepared, so that unsupported definitions fail early.
        Statement::CreateKeyspace(c) => {
            crate::store::build_keyspace(c, &cfg.node.datacenter)?;
            None
        }
        Statement::CreateTable(c) => {
            crate::store::build_table(&keyspace_of(ks, &c.table)?, c)?;
            None
        }
        Statement::Truncate(q) => {
            user_table(store, ks, q)?;
            None
        }
        Statement::Use(_) | Statement::DropKeyspace { .. } | Statement::DropTable { .. } => None,
    };
    Ok(PreparedMeta { bind: m.finish()?, pk_indexes, result })
}

/// Marker indexes binding the partition key (all of them, or none if a key part is a literal).
fn marker_indexes(pk_terms: &[Term]) -> Vec<u16> {
    let idx: Vec<u16> = pk_terms
        .iter()
        .filter_map(|t| match t {
            Term::Bind(i) => Some(*i as u16),
            Term::Lit(_) => None,
        })
        .collect();
    if idx.len() == pk_terms.len() { idx } else { Vec::new() }
}

/// Executes one statement (QUERY or EXECUTE).
pub fn execute(
    store: &mut Store,
    cfg: &ExecConfig,
    ks: Option<&str>,
    parsed: &Parsed,
    req: &Request<'_>,
    counters: &mut Counters,
) -> Result<Outcome, CqlError> {
    check_values(parsed, req.values)?;
    match &parsed.statement {
        Statement::Select(s) => {
            if req.consistency == Consistency::Any {
                return Err(CqlError::invalid("ANY ConsistencyLevel is only supported for writes"));
            }
            counters.selects += 1;
            let mut m = Markers::new(parsed.markers);
            match resolve(store, ks, &s.table)? {
                Target::User(t) => {
                    let plan = plan_user_select(t, s, &mut m)?;
                    run_user_select(t, &plan, req).map(Outcome::Rows)
                }
                Target::System(t) => {
                    let plan = plan_sys_select(&t, s, &mut m)?;
                    run_sys_select(&t, &plan, store, &cfg.node, req).map(Outcome::Rows)
                }
            }
        }
        stmt @ (Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)) => {
            check_write_consistency(req.consistency)?;
            let table = user_table(store, ks, stmt.table().ok_or_else(|| CqlError::server("no table"))?)?;
            let mut m = Markers::new(parsed.markers);
            let plan = plan_write(table, stmt, &mut m)?;
            let bound = bind_write(table, &plan, req.values)?;
            let (tks, tname) = (table.keyspace.clone(), table.name.clone());
            run_write(store, &tks, &tname, bound, cfg.lwt_style, counters)
        }
        Statement::Use(name) => {
            if !store.keyspaces.contains_key(name) && !system::is_system_keyspace(name) {
                return Err(CqlError::invalid(format!("Keyspace '{name}' does not exist")));
            }
            Ok(Outcome::SetKeyspace(name.clone()))
        }
        Statement::CreateKeyspace(c) => {
            let created = store.create_keyspace(c, &cfg.node.datacenter)?;
            Ok(schema_change(created, "CREATED", "KEYSPACE", &c.name, None, counters))
        }
        Statement::DropKeyspace { name, if_exists } => {
            let dropped = store.drop_keyspace(name, *if_exists)?;
            Ok(schema_change(dropped, "DROPPED", "KEYSPACE", name, None, counters))
        }
        Statement::CreateTable(c) => {
            let keyspace = keyspace_of(ks, &c.table)?;
            if system::is_system_keyspace(&keyspace) {
                return Err(CqlError::unauthorized(format!("{keyspace} keyspace is not user-modifiable.")));
            }
            let created = store.create_table(&keyspace, c)?;
            Ok(schema_change(created, "CREATED", "TABLE", &keyspace, Some(&c.table.name), counters))
        }
        Statement::DropTable { table, if_exists } => {
            let keyspace = keyspace_of(ks, table)?;
            if system::is_system_keyspace(&keyspace) {
                return Err(CqlError::unauthorized(format!("{keyspace} keyspace is not user-modifiable.")));
            }
            let dropped = store.drop_table(&keyspace, &table.name, *if_exists)?;
            Ok(schema_change(dropped, "DROPPED", "TABLE", &keyspace, Some(&table.name), counters))
        }
        Statement::Truncate(q) => {
            let t = user_table(store, ks, q)?;
            let (tks, tname) = (t.keyspace.clone(), t.name.clone());
            if let Some(t) = store.table_mut(&tks, &tname) {
                t.partitions.clear();
            }
            Ok(Outcome::Void)
        }
    }
}

fn schema_change(
    changed: bool,
    change: &'static str,
    target: &'static str,
    ks: &str,
    table: Option<&str>,
    counters: &mut Counters,
) -> Outcome {
    if !changed {
        return Outcome::Void;
    }
    counters.schema_changes += 1;
    Outcome::SchemaChange { change, target, keyspace: ks.to_owned(), table: table.map(str::to_owned) }
}

/// One statement of a batch: the keyspace it was prepared/sent in, the statement, its values.
#[derive(Debug)]
pub struct BatchStatement<'a> {
    pub keyspace: Option<String>,
    pub parsed: &'a Parsed,
    pub values: &'a [RawValue],
}

/// Executes a BATCH (kind 0 logged, 1 unlogged, 2 counter) atomically.
pub fn execute_batch(
    store: &mut Store,
    cfg: &ExecConfig,
    kind: u8,
    items: &[BatchStatement<'_>],
    consistency: Consistency,
    counters: &mut Counters,
) -> Result<Outcome, CqlError> {
    if kind == 2 {
        return Err(CqlError::unsupported_invalid("COUNTER batches"));
    }
    check_write_consistency(consistency)?;
    // Bind everything first: nothing is applied if any statement is invalid.
    let mut bound: Vec<((String, String), BoundWrite)> = Vec::new();
    let conditional = items.iter().any(|i| i.parsed.statement.is_conditional());
    for item in items {
        let stmt = &item.parsed.statement;
        if !stmt.is_modification() {
            return Err(CqlError::invalid("Invalid statement in batch: only UPDATE, INSERT and DELETE statements are allowed."));
        }
        check_values(item.parsed, item.values)?;
        let table = user_table(store, item.keyspace.as_deref(), stmt.table().ok_or_else(|| CqlError::server("no table"))?)?;
        let mut m = Markers::new(item.parsed.markers);
        let plan = plan_write(table, stmt, &mut m)?;
        let w = bind_write(table, &plan, item.values)?;
        bound.push(((table.keyspace.clone(), table.name.clone()), w));
    }
    counters.batches += 1;
    counters.writes += bound.len() as u64;
    if !conditional {
        for ((ks, name), w) in &bound {
            if let Some(t) = store.table_mut(ks, name) {
                w.mutation.apply(t);
            }
        }
        return Ok(Outcome::Void);
    }
    let Some(((ks, name), first)) = bound.first() else {
        return Ok(Outcome::Void);
    };
    if bound.iter().any(|(t, _)| t.0 != *ks || t.1 != *name) {
        return Err(CqlError::invalid("BATCH with conditions cannot span multiple tables"));
    }
    let first_pk = first.mutation.pk().to_vec();
    if bound.iter().any(|(_, w)| w.mutation.pk() != first_pk.as_slice()) {
        return Err(CqlError::invalid("BATCH with conditions cannot span multiple partitions"));
    }
    let (ks, name) = (ks.clone(), name.clone());
    let table = store.table_mut(&ks, &name).ok_or_else(|| CqlError::invalid(format!("unconfigured table {name}")))?;
    // Every condition is evaluated against the state before the batch.
    let mut applies = true;
    for (_, w) in &bound {
        if let Some(cond) = &w.cond {
            let (_, row) = lookup(table, w.mutation.pk(), w.mutation.ck());
            if !cond_holds(table, cond, row) {
                applies = false;
            }
        }
    }
    let result = batch_result(table, &bound, applies, cfg.lwt_style);
    counters.lwt += 1;
    if applies {
        counters.lwt_applied += 1;
        for (_, w) in &bound {
            w.mutation.apply(table);
        }
    } else {
        counters.lwt_not_applied += 1;
    }
    Ok(Outcome::Rows(result))
}

fn batch_result(table: &Table, bound: &[((String, String), BoundWrite)], applies: bool, style: LwtStyle) -> Rows {
    let order = table.all_columns_order();
    let key_cols: Vec<usize> = table.partition_key.iter().chain(table.clustering.iter()).copied().collect();
    let conds: Vec<(&BoundWrite, &BoundCond)> = bound.iter().filter_map(|(_, w)| w.cond.as_ref().map(|c| (w, c))).collect();
    match style {
        LwtStyle::Scylla => {
            // [applied] + key columns + every conditional statement's columns, in table order;
            // one row per statement, with the old row of statements whose row was read.
            let mut set: HashSet<usize> = key_cols.iter().copied().collect();
            for (_, c) in &conds {
                set.extend(cas_columns(table, c, true));
            }
            let cols: Vec<usize> = order.iter().copied().filter(|c| set.contains(c)).collect();
            let read_keys: Vec<Vec<u8>> =
                conds.iter().filter_map(|(w, _)| w.mutation.ck().map(|ck| table.clustering_encoding(ck))).collect();
            let mut columns = vec![applied_spec(table)];
            columns.extend(cols.iter().map(|c| spec(table, *c)));
            let rows = bound
                .iter()
                .map(|(_, w)| {
                    let mut r = vec![bool_cell(applies)];
                    let was_read = w.mutation.ck().is_some_and(|ck| read_keys.contains(&table.clustering_encoding(ck)));
                    let (part, row) = if was_read { lookup(table, w.mutation.pk(), w.mutation.ck()) } else { (None, None) };
                    r.extend(row_values(table, part, row, &cols));
                    r
                })
                .collect();
            Rows { columns, rows, paging_state: None }
        }
        LwtStyle::Cassandra => {
            let applied_only = || Rows { columns: vec![applied_spec(table)], rows: vec![vec![bool_cell(applies)]], paging_state: None };
            if applies {
                return applied_only();
            }
            let wildcard = conds.iter().any(|(_, c)| matches!(c, BoundCond::Exists | BoundCond::NotExists));
            let cols: Vec<usize> = if wildcard {
                order
            } else {
                let mut cols = key_cols;
                for (_, c) in &conds {
                    for col in cas_columns(table, c, false) {
                        if !cols.contains(&col) {
                            cols.push(col);
                        }
                    }
                }
                cols
            };
            // The existing rows named by conditions, in clustering order, once each.
            let mut found: Vec<(Vec<u8>, Cells)> = Vec::new();
            for (w, _) in &conds {
                let (part, row) = lookup(table, w.mutation.pk(), w.mutation.ck());
                if let (Some(_), Some(r)) = (part, row) {
                    let enc = table.clustering_encoding(&r.clustering);
                    if !found.iter().any(|(e, _)| *e == enc) {
                        found.push((enc, row_values(table, part, row, &cols)));
                    }
                }
            }
            if found.is_empty() {
                return applied_only();
            }
            found.sort_by(|a, b| a.0.cmp(&b.0));
            let mut columns = vec![applied_spec(table)];
            columns.extend(cols.iter().map(|c| spec(table, *c)));
            let rows = found
                .into_iter()
                .map(|(_, vals)| {
                    let mut r = vec![bool_cell(false)];
                    r.extend(vals);
                    r
                })
                .collect();
            Rows { columns, rows, paging_state: None }
        }
    }
}
