//! Lexer and parser for the CQL subset the stand-in implements.
//!
//! Anything outside the subset is a SyntaxError (or an Invalid error where the real server would
//! also answer Invalid) naming the unsupported construct; nothing is skipped silently.

use crate::error::CqlError;
use crate::types::Literal;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Unquoted identifier or keyword, as written.
    Ident(String),
    /// Double-quoted identifier (case-sensitive).
    QIdent(String),
    Str(String),
    Int(String),
    Float(String),
    Hex(Vec<u8>),
    Uuid([u8; 16]),
    Sym(&'static str),
    Eof,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => s.clone(),
        Tok::QIdent(s) => format!("\"{s}\""),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Int(s) | Tok::Float(s) => s.clone(),
        Tok::Hex(_) => "blob constant".into(),
        Tok::Uuid(_) => "uuid constant".into(),
        Tok::Sym(s) => (*s).to_owned(),
        Tok::Eof => "end of statement".into(),
    }
}

const SYMS: &[&str] = &["<=", ">=", "!=", "(", ")", ",", ";", ".", "=", "<", ">", "?", "*", "{", "}", "[", "]", ":", "+", "-"];

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn try_uuid(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() < 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut hi: Option<u8> = None;
    for (i, &c) in s[..36].iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = hexval(c)?;
        match hi.take() {
            None => hi = Some(v),
            Some(h) => {
                out[n] = (h << 4) | v;
                n += 1;
            }
        }
    }
    if s.len() > 36 && (s[36].is_ascii_alphanumeric() || s[36] == b'_') {
        return None;
    }
    Some(out)
}

fn lex(src: &str) -> Result<Vec<Tok>, CqlError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if (c == b'-' && b.get(i + 1) == Some(&b'-')) || (c == b'/' && b.get(i + 1) == Some(&b'/')) {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = src[i + 2..].find("*/").ok_or_else(|| CqlError::syntax("unterminated comment"))?;
            i += 2 + end + 2;
            continue;
        }
        if let Some(u) = try_uuid(&b[i..]) {
            out.push(Tok::Uuid(u));
            i += 36;
            continue;
        }
        if c == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
            let start = i + 2;
            let mut j = start;
            while j < b.len() && hexval(b[j]).is_some() {
                j += 1;
            }
            let digits = &b[start..j];
            if !digits.len().is_multiple_of(2) {
                return Err(CqlError::syntax("blob constant with an odd number of hex digits"));
            }
            let bytes = digits.chunks(2).map(|p| (hexval(p[0]).unwrap_or(0) << 4) | hexval(p[1]).unwrap_or(0)).collect();
            out.push(Tok::Hex(bytes));
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                float = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < b.len() && matches!(b[i], b'e' | b'E') {
                let mut j = i + 1;
                if j < b.len() && matches!(b[j], b'+' | b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    float = true;
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            if i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
                return Err(CqlError::syntax(format!("unexpected character after number near '{}'", &src[start..=i])));
            }
            let text = src[start..i].to_owned();
            out.push(if float { Tok::Float(text) } else { Tok::Int(text) });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_owned()));
            continue;
        }
        if c == b'"' {
            let mut s = String::new();
            i += 1;
            loop {
                match src[i..].find('"') {
                    None => return Err(CqlError::syntax("unterminated quoted identifier")),
                    Some(p) => {
                        s.push_str(&src[i..i + p]);
                        i += p + 1;
                        if b.get(i) == Some(&b'"') {
                            s.push('"');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            out.push(Tok::QIdent(s));
            continue;
        }
        if c == b'\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match src[i..].find('\'') {
                    None => return Err(CqlError::syntax("unterminated string constant")),
                    Some(p) => {
                        s.push_str(&src[i..i + p]);
                        i += p + 1;
                        if b.get(i) == Some(&b'\'') {
                            s.push('\'');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            out.push(Tok::Str(s));
            continue;
        }
        if c == b'$' && b.get(i + 1) == Some(&b'$') {
            return Err(CqlError::unsupported("$$-quoted string constants"));
        }
        match SYMS.iter().find(|s| src[i..].starts_with(**s)) {
            Some(s) => {
                out.push(Tok::Sym(s));
                i += s.len();
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(CqlError::syntax(format!("unexpected character '{ch}'")));
            }
        }
    }
    out.push(Tok::Eof);
    Ok(out)
}

/// A value in a statement: a positional bind marker or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Bind(usize),
    Lit(Literal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Ne => "!=",
        }
    }
}

/// Right-hand side of a WHERE relation.
#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    Term(Term),
    /// `IN ?` (a list bound as one value) or `IN (a, b, ...)`.
    In(Vec<Term>, bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub column: String,
    pub op: Op,
    pub rhs: Rhs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualName {
    pub keyspace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for QualName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.keyspace {
            Some(ks) => write!(f, "{ks}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Star,
    CountStar,
    /// (column, alias)
    Columns(Vec<(String, Option<String>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub table: QualName,
    pub selection: Selection,
    pub relations: Vec<Relation>,
    /// (column, descending)
    pub order_by: Vec<(String, bool)>,
    pub limit: Option<Term>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Exists,
    Columns(Vec<(String, Op, Term)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    pub table: QualName,
    pub columns: Vec<String>,
    pub values: Vec<Term>,
    pub if_not_exists: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub table: QualName,
    pub assignments: Vec<(String, Term)>,
    pub relations: Vec<Relation>,
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub table: QualName,
    /// Columns to delete; empty deletes the row(s).
    pub columns: Vec<String>,
    pub relations: Vec<Relation>,
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub table: QualName,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub partition_key: Vec<String>,
    pub clustering: Vec<String>,
    /// CLUSTERING ORDER BY entries (column, descending).
    pub clustering_order: Vec<(String, bool)>,
    /// Other WITH options (name, value).
    pub options: Vec<(String, PropValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    Const(Literal),
    Ident(String),
    Map(Vec<(Literal, Literal)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateKeyspace {
    pub name: String,
    pub if_not_exists: bool,
    pub options: Vec<(String, PropValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Select(Select),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Use(String),
    CreateKeyspace(CreateKeyspace),
    CreateTable(CreateTable),
    DropKeyspace { name: String, if_exists: bool },
    DropTable { table: QualName, if_exists: bool },
    Truncate(QualName),
}

impl Statement {
    pub fn is_modification(&self) -> bool {
        matches!(self, Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_))
    }

    pub fn is_conditional(&self) -> bool {
        match self {
            Statement::Insert(i) => i.if_not_exists,
            Statement::Update(u) => u.condition.is_some(),
            Statement::Delete(d) => d.condition.is_some(),
            _ => false,
        }
    }

    pub fn table(&self) -> Option<&QualName> {
        match self {
            Statement::Select(s) => Some(&s.table),
            Statement::Insert(s) => Some(&s.table),
            Statement::Update(s) => Some(&s.table),
            Statement::Delete(s) => Some(&s.table),
            Statement::Truncate(t) => Some(t),
            Statement::DropTable { table, .. } => Some(table),
            Statement::CreateTable(c) => Some(&c.table),
            _ => None,
        }
    }
}

/// A parsed statement and the number of bind markers in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub statement: Statement,
    pub markers: usize,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    markers: usize,
}

/// Parses one statement (an optional trailing `;` is allowed).
pub fn parse(src: &str) -> Result<Parsed, CqlError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0, markers: 0 };
    let statement = p.statement()?;
    p.eat_sym(";");
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected_here("end of statement"));
    }
    Ok(Parsed { statement, markers: p.markers })
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn unexpected_here(&self, expected: &str) -> CqlError {
        CqlError::syntax(format!("line 1: expected {expected}, found '{}'", describe(self.peek())))
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), CqlError> {
        if self.eat_kw(kw) { Ok(()) } else { Err(self.unexpected_here(kw)) }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(x) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), CqlError> {
        if self.eat_sym(s) { Ok(()) } else { Err(self.unexpected_here(&format!("'{s}'"))) }
    }

    /// An identifier: unquoted ones are case-insensitive (lower-cased), quoted ones kept as is.
    fn ident(&mut self, what: &str) -> Result<String, CqlError> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.pos += 1;
                Ok(s.to_ascii_lowercase())
            }
            Tok::QIdent(s) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected_here(what)),
        }
    }

    fn qual_name(&mut self) -> Result<QualName, CqlError> {
        let first = self.ident("a table name")?;
        if self.eat_sym(".") {
            let name = self.ident("a table name")?;
            Ok(QualName { keyspace: Some(first), name })
        } else {
            Ok(QualName { keyspace: None, name: first })
        }
    }

    fn statement(&mut self) -> Result<Statement, CqlError> {
        let Tok::Ident(first) = self.peek().clone() else {
            return Err(self.unexpected_here("a statement"));
        };
        match first.to_ascii_lowercase().as_str() {
            "select" => self.select().map(Statement::Select),
            "insert" => self.insert().map(Statement::Insert),
            "update" => self.update().map(Statement::Update),
            "delete" => self.delete().map(Statement::Delete),
            "use" => {
                self.pos += 1;
                Ok(Statement::Use(self.ident("a keyspace name")?))
            }
            "create" => self.create(),
            "drop" => self.drop(),
            "truncate" => {
                self.pos += 1;
                self.eat_kw("table");
                Ok(Statement::Truncate(self.qual_name()?))
            }
            "begin" => Err(CqlError::unsupported("BEGIN BATCH ... APPLY BATCH as a query string (send a protocol BATCH)")),
            "alter" | "grant" | "revoke" | "list" | "describe" | "desc" => {
                Err(CqlError::unsupported(format!("the {} statement", first.to_ascii_uppercase())))
            }
            _ => Err(CqlError::syntax(format!("line 1: unknown or unsupported statement starting with '{first}'"))),
        }
    }

    fn term(&mut self) -> Result<Term, CqlError> {
        match self.next() {
            Tok::Sym("?") => {
                let i = self.markers;
                self.markers += 1;
                Ok(Term::Bind(i))
            }
            Tok::Sym(":") => Err(CqlError::unsupported("named bind markers (:name)")),
            Tok::Sym("-") => match self.next() {
                Tok::Int(s) => Ok(Term::Lit(Literal::Int(format!("-{s}")))),
                Tok::Float(s) => Ok(Term::Lit(Literal::Float(format!("-{s}")))),
                t => Err(CqlError::syntax(format!("line 1: expected a number after '-', found '{}'", describe(&t)))),
            },
            Tok::Str(s) => Ok(Term::Lit(Literal::Str(s))),
            Tok::Int(s) => Ok(Term::Lit(Literal::Int(s))),
            Tok::Float(s) => Ok(Term::Lit(Literal::Float(s))),
            Tok::Hex(b) => Ok(Term::Lit(Literal::Hex(b))),
            Tok::Uuid(u) => Ok(Term::Lit(Literal::Uuid(u))),
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => Ok(Term::Lit(Literal::Bool(true))),
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => Ok(Term::Lit(Literal::Bool(false))),
            Tok::Ident(s) if s.eq_ignore_ascii_case("null") => Ok(Term::Lit(Literal::Null)),
            Tok::Ident(s) if matches!(self.peek(), Tok::Sym("(")) => Err(CqlError::unsupported(format!("the function call {s}(...)"))),
            Tok::Ident(s) | Tok::QIdent(s) => {
                if matches!(self.peek(), Tok::Sym("+" | "-")) {
                    Err(CqlError::unsupported(format!(
                        "arithmetic or counter/collection updates such as '{s} {} ...'",
                        describe(self.peek())
                    )))
                } else {
                    Err(CqlError::unsupported(format!("the term '{s}' (only bind markers and constants are supported)")))
                }
            }
            Tok::Sym("{" | "[") => Err(CqlError::unsupported("collection literals")),
            Tok::Sym("(") => Err(CqlError::unsupported("tuple literals")),
            t => Err(CqlError::syntax(format!("line 1: expected a value, found '{}'", describe(&t)))),
        }
    }

    /// After a term in a SET or condition, reject arithmetic (`c = c + 1`, `c = ? + c`).
    fn no_arithmetic(&self, column: &str) -> Result<(), CqlError> {
        if matches!(self.peek(), Tok::Sym("+" | "-")) {
            return Err(CqlError::unsupported(format!("arithmetic or counter/collection updates of column {column}")));
        }
        Ok(())
    }

    fn relation_op(&mut self) -> Result<Option<Op>, CqlError> {
        let op = match self.peek() {
            Tok::Sym("=") => Op::Eq,
            Tok::Sym("<") => Op::Lt,
            Tok::Sym("<=") => Op::Le,
            Tok::Sym(">") => Op::Gt,
            Tok::Sym(">=") => Op::Ge,
            Tok::Sym("!=") => Op::Ne,
            _ => return Ok(None),
        };
        self.pos += 1;
        Ok(Some(op))
    }

    fn where_clause(&mut self) -> Result<Vec<Relation>, CqlError> {
        let mut out = Vec::new();
        loop {
            if self.is_kw("token") && matches!(self.peek_at(1), Tok::Sym("(")) {
                return Err(CqlError::unsupported("token() restrictions"));
            }
            if matches!(self.peek(), Tok::Sym("(")) {
                return Err(CqlError::unsupported("multi-column (tuple) restrictions"));
            }
            let column = self.ident("a column name")?;
            if matches!(self.peek(), Tok::Sym("[")) {
                return Err(CqlError::unsupported("restrictions on collection elements"));
            }
            if let Some(op) = self.relation_op()? {
                if op == Op::Ne {
                    return Err(CqlError::unsupported_invalid(format!("the != operator in WHERE (column {column})")));
                }
                let t = self.term()?;
                out.push(Relation { column, op, rhs: Rhs::Term(t) });
            } else if self.eat_kw("in") {
                if self.eat_sym("(") {
                    let mut terms = Vec::new();
                    if !self.eat_sym(")") {
                        loop {
                            terms.push(self.term()?);
                            if self.eat_sym(")") {
                                break;
                            }
                            self.expect_sym(",")?;
                        }
                    }
                    out.push(Relation { column, op: Op::Eq, rhs: Rhs::In(terms, false) });
                } else {
                    let t = self.term()?;
                    out.push(Relation { column, op: Op::Eq, rhs: Rhs::In(vec![t], true) });
                }
            } else if self.is_kw("contains") {
                return Err(CqlError::unsupported("CONTAINS restrictions"));
            } else if self.is_kw("like") {
                return Err(CqlError::unsupported("LIKE restrictions"));
            } else if self.is_kw("is") {
                return Err(CqlError::unsupported("IS NOT NULL restrictions"));
            } else {
                return Err(self.unexpected_here("a relation operator"));
            }
            if !self.eat_kw("and") {
                break;
            }
        }
        Ok(out)
    }

    fn reject_using(&mut self) -> Result<(), CqlError> {
        if self.is_kw("using") {
            let what = match self.peek_at(1) {
                Tok::Ident(s) => s.to_ascii_uppercase(),
                _ => String::new(),
            };
            return Err(CqlError::unsupported(format!("USING {what} (TTL, TIMESTAMP and TIMEOUT are not implemented)")));
        }
        Ok(())
    }

    fn select(&mut self) -> Result<Select, CqlError> {
        self.expect_kw("select")?;
        if self.is_kw("json") {
            return Err(CqlError::unsupported("SELECT JSON"));
        }
        if self.is_kw("distinct") && !self.is_kw_at(1, "from") {
            return Err(CqlError::unsupported("SELECT DISTINCT"));
        }
        let selection = if self.eat_sym("*") {
            Selection::Star
        } else if self.is_kw("count") && matches!(self.peek_at(1), Tok::Sym("(")) {
            self.pos += 2;
            if !self.eat_sym("*") {
                match self.next() {
                    Tok::Int(s) if s == "1" => {}
                    _ => return Err(CqlError::unsupported("count() of anything but * or 1")),
                }
            }
            self.expect_sym(")")?;
            if self.eat_kw("as") {
                return Err(CqlError::unsupported("an alias for count(*)"));
            }
            Selection::CountStar
        } else {
            let mut cols = Vec::new();
            loop {
                let name = self.ident("a column name")?;
                if matches!(self.peek(), Tok::Sym("(")) {
                    return Err(CqlError::unsupported(format!("the function {name}() in a selection")));
                }
                if matches!(self.peek(), Tok::Sym("[" | ".")) {
                    return Err(CqlError::unsupported("collection element or field selection"));
                }
                let alias = if self.eat_kw("as") { Some(self.ident("an alias")?) } else { None };
                cols.push((name, alias));
                if !self.eat_sym(",") {
                    break;
                }
            }
            Selection::Columns(cols)
        };
        self.expect_kw("from")?;
        let table = self.qual_name()?;
        let relations = if self.eat_kw("where") { self.where_clause()? } else { Vec::new() };
        if self.is_kw("group") {
            return Err(CqlError::unsupported("GROUP BY"));
        }
        let mut order_by = Vec::new();
        if self.eat_kw("order") {
            self.expect_kw("by")?;
            loop {
                let col = self.ident("a column name")?;
                let desc = if self.eat_kw("desc") {
                    true
                } else {
                    self.eat_kw("asc");
                    false
                };
                order_by.push((col, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.is_kw("per") {
            return Err(CqlError::unsupported("PER PARTITION LIMIT"));
        }
        let limit = if self.eat_kw("limit") { Some(self.term()?) } else { None };
        if self.is_kw("allow") {
            return Err(CqlError::unsupported("ALLOW FILTERING"));
        }
        if self.is_kw("bypass") {
            return Err(CqlError::unsupported("BYPASS CACHE"));
        }
        self.reject_using()?;
        Ok(Select { table, selection, relations, order_by, limit })
    }

    fn insert(&mut self) -> Result<Insert, CqlError> {
        self.expect_kw("insert")?;
        self.expect_kw("into")?;
        let table = self.qual_name()?;
        if self.is_kw("json") {
            return Err(CqlError::unsupported("INSERT JSON"));
        }
        self.expect_sym("(")?;
        let mut columns = Vec::new();
        loop {
            columns.push(self.ident("a column name")?);
            if self.eat_sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        self.expect_kw("values")?;
        self.expect_sym("(")?;
        let mut values = Vec::new();
        loop {
            values.push(self.term()?);
            if self.eat_sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        let mut if_not_exists = false;
        if self.eat_kw("if") {
            self.expect_kw("not")?;
            self.expect_kw("exists")?;
            if_not_exists = true;
        }
        self.reject_using()?;
        Ok(Insert { table, columns, values, if_not_exists })
    }

    fn condition(&mut self) -> Result<Option<Condition>, CqlError> {
        if !self.eat_kw("if") {
            return Ok(None);
        }
        if self.eat_kw("exists") {
            return Ok(Some(Condition::Exists));
        }
        if self.is_kw("not") && self.is_kw_at(1, "exists") {
            return Err(CqlError::syntax("IF NOT EXISTS is only valid on INSERT"));
        }
        let mut conds = Vec::new();
        loop {
            let column = self.ident("a column name")?;
            if matches!(self.peek(), Tok::Sym("[" | ".")) {
                return Err(CqlError::unsupported("conditions on collection elements or UDT fields"));
            }
            let op = match self.relation_op()? {
                Some(op) => op,
                None if self.is_kw("in") => return Err(CqlError::unsupported("IN in IF conditions")),
                None => return Err(self.unexpected_here("a condition operator")),
            };
            let t = self.term()?;
            self.no_arithmetic(&column)?;
            conds.push((column, op, t));
            if !self.eat_kw("and") {
                break;
            }
        }
        Ok(Some(Condition::Columns(conds)))
    }

    fn update(&mut self) -> Result<Update, CqlError> {
        self.expect_kw("update")?;
        let table = self.qual_name()?;
        self.reject_using()?;
        self.expect_kw("set")?;
        let mut assignments = Vec::new();
        loop {
            let column = self.ident("a column name")?;
            if matches!(self.peek(), Tok::Sym("[" | ".")) {
                return Err(CqlError::unsupported("collection element or UDT field updates"));
            }
            self.expect_sym("=")?;
            let t = self.term()?;
            self.no_arithmetic(&column)?;
            assignments.push((column, t));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_kw("where")?;
        let relations = self.where_clause()?;
        let condition = self.condition()?;
        self.reject_using()?;
        Ok(Update { table, assignments, relations, condition })
    }

    fn delete(&mut self) -> Result<Delete, CqlError> {
        self.expect_kw("delete")?;
        let mut columns = Vec::new();
        if !self.is_kw("from") {
            loop {
                let c = self.ident("a column name")?;
                if matches!(self.peek(), Tok::Sym("[" | ".")) {
                    return Err(CqlError::unsupported("deleting collection elements or UDT fields"));
                }
                columns.push(c);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        self.expect_kw("from")?;
        let table = self.qual_name()?;
        self.reject_using()?;
        self.expect_kw("where")?;
        let relations = self.where_clause()?;
        let condition = self.condition()?;
        Ok(Delete { table, columns, relations, condition })
    }

    fn if_not_exists(&mut self) -> Result<bool, CqlError> {
        if self.eat_kw("if") {
            self.expect_kw("not")?;
            self.expect_kw("exists")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn if_exists(&mut self) -> Result<bool, CqlError> {
        if self.eat_kw("if") {
            self.expect_kw("exists")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn create(&mut self) -> Result<Statement, CqlError> {
        self.expect_kw("create")?;
        if self.eat_kw("keyspace") || self.eat_kw("schema") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.ident("a keyspace name")?;
            self.expect_kw("with")?;
            let options = self.properties()?;
            return Ok(Statement::CreateKeyspace(CreateKeyspace { name, if_not_exists, options }));
        }
        if self.eat_kw("table") || self.eat_kw("columnfamily") {
            return self.create_table().map(Statement::CreateTable);
        }
        let what = match self.peek() {
            Tok::Ident(s) => s.to_ascii_uppercase(),
            t => describe(t),
        };
        Err(CqlError::unsupported(format!("CREATE {what} (indexes, views, types, functions, roles...)")))
    }

    fn create_table(&mut self) -> Result<CreateTable, CqlError> {
        let if_not_exists = self.if_not_exists()?;
        let table = self.qual_name()?;
        self.expect_sym("(")?;
        let mut columns = Vec::new();
        let mut partition_key = Vec::new();
        let mut clustering = Vec::new();
        let mut inline_pk: Option<String> = None;
        loop {
            if self.is_kw("primary") && self.is_kw_at(1, "key") {
                self.pos += 2;
                if !partition_key.is_empty() || inline_pk.is_some() {
                    return Err(CqlError::invalid("Multiple PRIMARY KEYs specified (exactly one required)"));
                }
                self.expect_sym("(")?;
                if self.eat_sym("(") {
                    loop {
                        partition_key.push(self.ident("a column name")?);
                        if self.eat_sym(")") {
                            break;
                        }
                        self.expect_sym(",")?;
                    }
                } else {
                    partition_key.push(self.ident("a column name")?);
                }
                while self.eat_sym(",") {
                    clustering.push(self.ident("a column name")?);
                }
                self.expect_sym(")")?;
            } else {
                let name = self.ident("a column name")?;
                let type_name = match self.next() {
                    Tok::Ident(t) => t.to_ascii_lowercase(),
                    Tok::QIdent(t) => t,
                    t => return Err(CqlError::syntax(format!("line 1: expected a type, found '{}'", describe(&t)))),
                };
                if matches!(self.peek(), Tok::Sym("<")) {
                    return Err(CqlError::unsupported(format!("the column type {type_name}<...> in user tables")));
                }
                if self.is_kw("static") {
                    return Err(CqlError::unsupported("static columns"));
                }
                if self.is_kw("primary") && self.is_kw_at(1, "key") {
                    self.pos += 2;
                    if inline_pk.is_some() {
                        return Err(CqlError::invalid("Multiple PRIMARY KEYs specified (exactly one required)"));
                    }
                    inline_pk = Some(name.clone());
                }
                columns.push(ColumnDef { name, type_name });
            }
            if self.eat_sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        if let Some(pk) = inline_pk {
            if !partition_key.is_empty() {
                return Err(CqlError::invalid("Multiple PRIMARY KEYs specified (exactly one required)"));
            }
            partition_key.push(pk);
        }
        let mut clustering_order = Vec::new();
        let mut options = Vec::new();
        if self.eat_kw("with") {
            loop {
                if self.eat_kw("clustering") {
                    self.expect_kw("order")?;
                    self.expect_kw("by")?;
                    self.expect_sym("(")?;
                    loop {
                        let c = self.ident("a column name")?;
                        let desc = if self.eat_kw("desc") {
                            true
                        } else {
                            self.expect_kw("asc")?;
                            false
                        };
                        clustering_order.push((c, desc));
                        if self.eat_sym(")") {
                            break;
                        }
                        self.expect_sym(",")?;
                    }
                } else if self.is_kw("compact") {
                    return Err(CqlError::unsupported("COMPACT STORAGE"));
                } else {
                    let name = self.ident("a table property")?;
                    self.expect_sym("=")?;
                    options.push((name, self.prop_value()?));
                }
                if !self.eat_kw("and") {
                    break;
                }
            }
        }
        Ok(CreateTable { table, if_not_exists, columns, partition_key, clustering, clustering_order, options })
    }

    fn literal(&mut self) -> Result<Literal, CqlError> {
        match self.term()? {
            Term::Lit(l) => Ok(l),
            Term::Bind(_) => Err(CqlError::invalid("bind markers are not allowed in schema statements")),
        }
    }

    fn prop_value(&mut self) -> Result<PropValue, CqlError> {
        if self.eat_sym("{") {
            let mut entries = Vec::new();
            if !self.eat_sym("}") {
                loop {
                    let k = self.literal()?;
                    self.expect_sym(":")?;
                    let v = if matches!(self.peek(), Tok::Sym("{")) {
                        return Err(CqlError::unsupported("nested maps in properties"));
                    } else {
                        self.literal()?
                    };
                    entries.push((k, v));
                    if self.eat_sym("}") {
                        break;
                    }
                    self.expect_sym(",")?;
                }
            }
            return Ok(PropValue::Map(entries));
        }
        if let Tok::Ident(s) = self.peek().clone()
            && !matches!(s.to_ascii_lowercase().as_str(), "true" | "false" | "null")
        {
            self.pos += 1;
            return Ok(PropValue::Ident(s.to_ascii_lowercase()));
        }
        Ok(PropValue::Const(self.literal()?))
    }

    fn properties(&mut self) -> Result<Vec<(String, PropValue)>, CqlError> {
        let mut out = Vec::new();
        loop {
            let name = self.ident("a property name")?;
            self.expect_sym("=")?;
            out.push((name, self.prop_value()?));
            if !self.eat_kw("and") {
                break;
            }
        }
        Ok(out)
    }

    fn drop(&mut self) -> Result<Statement, CqlError> {
        self.expect_kw("drop")?;
        if self.eat_kw("keyspace") || self.eat_kw("schema") {
            let if_exists = self.if_exists()?;
            let name = self.ident("a keyspace name")?;
            return Ok(Statement::DropKeyspace { name, if_exists });
        }
        if self.eat_kw("table") || self.eat_kw("columnfamily") {
            let if_exists = self.if_exists()?;
            let table = self.qual_name()?;
            return Ok(Statement::DropTable { table, if_exists });
        }
        let what = match self.peek() {
            Tok::Ident(s) => s.to_ascii_uppercase(),
            t => describe(t),
        };
        Err(CqlError::unsupported(format!("DROP {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtime_statements() {
        let p = parse("SELECT value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq < ? ORDER BY kind DESC, seq DESC LIMIT ?").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.markers, 5);
        let Statement::Select(s) = p.statement else { panic!("not a select") };
        assert_eq!(s.order_by, vec![("kind".to_owned(), true), ("seq".to_owned(), true)]);
        assert_eq!(s.limit, Some(Term::Bind(4)));

        let p = parse("UPDATE accounts SET version = ?, value = ? WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF version = ?").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.markers, 8);
        assert!(p.statement.is_conditional());

        let p = parse("INSERT INTO ks.claims (program_id, kind, id, account_id) VALUES (?, ?, ?, ?) IF NOT EXISTS;")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.statement.is_conditional());
        assert_eq!(p.statement.table().and_then(|t| t.keyspace.clone()), Some("ks".to_owned()));
    }

    #[test]
    fn parses_ddl() {
        let p = parse(
            "CREATE TABLE IF NOT EXISTS accounts (\n program_id text,\n kind tinyint, seq bigint, \"Key\" text, value blob,\n PRIMARY KEY ((program_id), kind, seq, \"Key\")\n) WITH CLUSTERING ORDER BY (kind DESC, seq ASC, \"Key\" ASC) AND comment = 'x' AND compaction = {'class': 'LeveledCompactionStrategy'}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Statement::CreateTable(t) = p.statement else { panic!("not create table") };
        assert_eq!(t.partition_key, vec!["program_id"]);
        assert_eq!(t.clustering, vec!["kind", "seq", "Key"]);
        assert_eq!(t.clustering_order[0], ("kind".to_owned(), true));
        assert_eq!(t.options.len(), 2);

        let p = parse("CREATE KEYSPACE IF NOT EXISTS loyalty WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': '3'} AND durable_writes = true AND tablets = {'enabled': false}").unwrap_or_else(|e| panic!("{e}"));
        let Statement::CreateKeyspace(k) = p.statement else { panic!("not create keyspace") };
        assert_eq!(k.options.len(), 3);
    }

    #[test]
    fn rejects_unsupported() {
        for q in [
            "SELECT * FROM accounts ALLOW FILTERING",
            "INSERT INTO t (a, b) VALUES (?, ?) USING TTL 10",
            "UPDATE t SET c = c + 1 WHERE a = ?",
            "UPDATE t USING TIMESTAMP 5 SET c = 1 WHERE a = ?",
            "SELECT writetime(v) FROM t",
            "SELECT * FROM t WHERE token(a) > 5",
            "CREATE INDEX ON t (v)",
            "BEGIN BATCH INSERT INTO t (a) VALUES (1) APPLY BATCH",
            "SELECT * FROM t WHERE a = :name",
        ] {
            assert!(parse(q).is_err(), "{q} should be rejected");
        }
        // IN parses (rejected later for user tables).
        assert!(parse("SELECT * FROM t WHERE a IN (1, 2)").is_ok());
    }

    #[test]
    fn lexes_constants() {
        let p =
            parse("SELECT * FROM t WHERE a = 123e4567-e89b-12d3-a456-426614174000 AND b = 0xCAFE AND c = -5 AND d = 'it''s' AND e = 1.5")
                .unwrap_or_else(|e| panic!("{e}"));
        let Statement::Select(s) = p.statement else { panic!() };
        assert!(matches!(&s.relations[0].rhs, Rhs::Term(Term::Lit(Literal::Uuid(_)))));
        assert_eq!(s.relations[1].rhs, Rhs::Term(Term::Lit(Literal::Hex(vec![0xca, 0xfe]))));
        assert_eq!(s.relations[2].rhs, Rhs::Term(Term::Lit(Literal::Int("-5".into()))));
        assert_eq!(s.relations[3].rhs, Rhs::Term(Term::Lit(Literal::Str("it's".into()))));
        assert_eq!(s.relations[4].rhs, Rhs::Term(Term::Lit(Literal::Float("1.5".into()))));
    }
}
