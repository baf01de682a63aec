//! The issuer's delegation policy: Biscuit Datalog files that decide who may act for whom, with
//! which rights, for how long and how deep.
//!
//! Every `*.datalog` file of the policy directory is loaded (in name order; subdirectories such
//! as `examples/` are not). Each statement is parsed on its own, so an error names the file and
//! the line: `policies/travel.datalog:12: ...`. A body predicate that is neither a request fact
//! (below) nor defined by a fact or rule of the policy is an error too (a typo would otherwise
//! silently deny).
//!
//! For each mint or hop the issuer evaluates the policy with these **request facts**:
//!
//! | fact | meaning |
//! | --- | --- |
//! | `operation("mint")` / `operation("delegate")` | what is asked |
//! | `subject($id)`, `subject_type($t)`, `subject_issuer($iss)`, `subject_name($n)` | who the work is for (`$t`: `user` or `workload`) |
//! | `actor($id)` | who asks: the first actor (mint) or the current holder (delegate) |
//! | `next_actor($id)` | the workload the holder delegates to (delegate only) |
//! | `chain_actor($n, $id)` | the actors so far, 0 first (delegate only) |
//! | `depth($n)` | the depth the new token would have (0 for a mint) |
//! | `requested_right($r)` | each right asked for |
//! | `requested_ttl($seconds)` | the lifetime asked for |
//!
//! and reads back the **derived facts** `grant($r)` (the rights that may be given: the token gets
//! the requested rights that are granted, or all granted rights when none were requested),
//! `max_ttl($seconds)` and `max_depth($n)` (the smallest value wins). The first matching `allow
//! if` / `deny if` policy decides; no match denies.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use biscuit_auth::builder::{Check, Fact, Policy, Rule, int, string};
use biscuit_auth::error::{Logic, MatchedPolicy, Token as BiscuitError};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits};

use crate::schema::Subject;

/// The request facts the issuer provides (name, arity).
pub const REQUEST_FACTS: [(&str, usize); 11] = [
    ("operation", 1),
    ("subject", 1),
    ("subject_type", 1),
    ("subject_issuer", 1),
    ("subject_name", 1),
    ("actor", 1),
    ("next_actor", 1),
    ("chain_actor", 2),
    ("depth", 1),
    ("requested_right", 1),
    ("requested_ttl", 1),
];

/// Run limits of a policy evaluation (explicit; Biscuit's 1 ms default is too tight).
pub const POLICY_LIMITS: AuthorizerLimits = AuthorizerLimits {
    max_facts: 10_000,
    max_iterations: 1_000,
    max_time: Duration::from_millis(100),
};

/// Why a policy could not be loaded. The message names the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file or the directory cannot be read.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A statement does not parse, or uses an undefined predicate.
    #[error("{file}:{line}: {message}")]
    Statement {
        /// The file.
        file: String,
        /// The line the statement starts on (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The policy has no `allow if` policy: it could only deny.
    #[error("{0}: no `allow if` policy: every request would be denied")]
    NoAllow(String),
}

/// What a statement is.
#[derive(Debug, Clone)]
enum Kind {
    Fact(Fact),
    Rule(Rule),
    Check(Check),
    Policy(Policy),
}

/// One parsed statement and where it came from.
#[derive(Debug, Clone)]
struct Statement {
    file: String,
    line: usize,
    text: String,
    kind: Kind,
}

/// A loaded, checked policy.
#[derive(Debug, Clone)]
pub struct PolicySet {
    statements: Vec<Statement>,
    /// Where it was loaded from (for messages).
    source: String,
    /// The files, for change detection.
    files: Vec<PathBuf>,
}

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new token for a subject.
    Mint,
    /// A hop to a next actor.
    Delegate,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Mint => "mint",
            Operation::Delegate => "delegate",
        }
    }
}

/// A mint or hop request, as the policy sees it.
#[derive(Debug, Clone)]
pub struct PolicyRequest<'a> {
    /// Mint or delegate.
    pub operation: Operation,
    /// The subject.
    pub subject: &'a Subject,
    /// The first actor (mint) or the current holder (delegate).
    pub actor: &'a str,
    /// The next actor (delegate).
    pub next_actor: Option<&'a str>,
    /// The actors so far (delegate).
    pub chain: &'a [String],
    /// The depth of the new token.
    pub depth: u32,
    /// The rights asked for (may be empty: all that the policy grants).
    pub requested_rights: &'a BTreeSet<String>,
    /// The lifetime asked for, seconds.
    pub requested_ttl: u64,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Whether an `allow` policy matched (and no check failed).
    pub allowed: bool,
    /// Which statement decided (`file:line: text`), or why nothing did.
    pub reason: String,
    /// The rights the token may carry.
    pub grants: BTreeSet<String>,
    /// The longest lifetime allowed, seconds.
    pub max_ttl: Option<u64>,
    /// The deepest chain allowed.
    pub max_depth: Option<u32>,
}

impl fmt::Display for PolicyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            if self.allowed { "allowed" } else { "denied" },
            self.reason
        )
    }
}

/// Splits Datalog source into statements (ending with `;`), each with the line it starts on;
/// `//` and `/* */` comments and string contents are skipped when looking for the `;`.
fn split_statements(src: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line = 0usize;
    let mut line = 1usize;
    let mut chars = src.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            current.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    if n == '\n' {
                        line += 1;
                    }
                    current.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let opened = line;
                let mut prev = ' ';
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                    }
                    if prev == '*' && n == '/' {
                        closed = true;
                        break;
                    }
                    prev = n;
                }
                if !closed {
                    return Err((opened, "unterminated /* comment".into()));
                }
                current.push(' ');
            }
            ';' => {
                let text = current.trim().to_owned();
                if !text.is_empty() {
                    out.push((start_line, text));
                }
                current.clear();
                start_line = 0;
            }
            _ => {
                if c == '"' {
                    in_string = true;
                }
                if start_line == 0 && !c.is_whitespace() {
                    start_line = line;
                }
                current.push(c);
            }
        }
    }
    if in_string {
        return Err((start_line.max(1), "unterminated string".into()));
    }
    let rest = current.trim();
    if !rest.is_empty() {
        return Err((
            start_line.max(1),
            format!("statement `{}` does not end with `;`", abbreviate(rest)),
        ));
    }
    Ok(out)
}

fn abbreviate(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 60 {
        let head: String = one_line.chars().take(57).collect();
        format!("{head}...")
    } else {
        one_line
    }
}

fn parse_statement(text: &str) -> Result<Kind, String> {
    let lead = text.trim_start();
    let starts = |w: &str| {
        lead.strip_prefix(w)
            .is_some_and(|rest| rest.starts_with(char::is_whitespace))
    };
    let err = |e: BiscuitError| match e {
        BiscuitError::Language(l) => l.to_string(),
        other => other.to_string(),
    };
    if starts("allow") || starts("deny") {
        Policy::try_from(text).map(Kind::Policy).map_err(err)
    } else if starts("check") || starts("reject") {
        Check::try_from(text).map(Kind::Check).map_err(err)
    } else if text.contains("<-") {
        Rule::try_from(text).map(Kind::Rule).map_err(err)
    } else {
        Fact::try_from(text).map(Kind::Fact).map_err(err)
    }
}

/// A predicate's name and arity.
type Signature = (String, usize);

/// The predicates a statement defines, and those its bodies use.
fn predicates(kind: &Kind) -> (Vec<Signature>, Vec<Signature>) {
    let body = |r: &Rule| -> Vec<Signature> {
        r.body
            .iter()
            .map(|p| (p.name.clone(), p.terms.len()))
            .collect()
    };
    match kind {
        Kind::Fact(f) => (
            vec![(f.predicate.name.clone(), f.predicate.terms.len())],
            vec![],
        ),
        Kind::Rule(r) => (vec![(r.head.name.clone(), r.head.terms.len())], body(r)),
        Kind::Check(c) => (vec![], c.queries.iter().flat_map(body).collect()),
        Kind::Policy(p) => (vec![], p.queries.iter().flat_map(body).collect()),
    }
}

impl PolicySet {
    /// Loads every `*.datalog` file directly in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let io = |path: &Path, e: std::io::Error| PolicyError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "datalog"))
            .collect();
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|e| io(f, e))?;
            sources.push((f.display().to_string(), text));
        }
        let mut set = Self::from_sources(&dir.display().to_string(), &sources)?;
        set.files = files;
        Ok(set)
    }

    /// Parses policy sources `(file name, text)`; `source` names them all in messages.
    pub fn from_sources(source: &str, sources: &[(String, String)]) -> Result<Self, PolicyError> {
        let mut statements = Vec::new();
        for (file, text) in sources {
            let parts =
                split_statements(text).map_err(|(line, message)| PolicyError::Statement {
                    file: file.clone(),
                    line,
                    message,
                })?;
            for (line, text) in parts {
                let kind = parse_statement(&text).map_err(|message| PolicyError::Statement {
                    file: file.clone(),
                    line,
                    message: format!("{message} in `{}`", abbreviate(&text)),
                })?;
                statements.push(Statement {
                    file: file.clone(),
                    line,
                    text,
                    kind,
                });
            }
        }
        let mut defined: HashSet<(String, usize)> = REQUEST_FACTS
            .iter()
            .map(|(n, a)| ((*n).to_owned(), *a))
            .collect();
        for s in &statements {
            defined.extend(predicates(&s.kind).0);
        }
        for s in &statements {
            if let Some((name, arity)) = predicates(&s.kind)
                .1
                .into_iter()
                .find(|p| !defined.contains(p))
            {
                return Err(PolicyError::Statement {
                    file: s.file.clone(),
                    line: s.line,
                    message: format!(
                        "predicate `{name}` with {arity} term(s) is neither a request fact nor defined by a fact or rule of the policy"
                    ),
                });
            }
        }
        if !statements.iter().any(
            |s| matches!(&s.kind, Kind::Policy(p) if p.kind == biscuit_auth::builder::PolicyKind::Allow),
        ) {
            return Err(PolicyError::NoAllow(source.to_owned()));
        }
        Ok(Self {
            statements,
            source: source.to_owned(),
            files: Vec::new(),
        })
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Number of statements.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether it has no statement.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Evaluates a request.
    pub fn evaluate(&self, req: &PolicyRequest<'_>) -> Result<PolicyOutcome, String> {
        let mut b = AuthorizerBuilder::new().set_limits(POLICY_LIMITS);
        let mut facts = vec![
            fact("operation", vec![string(req.operation.as_str())]),
            fact("subject", vec![string(&req.subject.id)]),
            fact("subject_type", vec![string(req.subject.kind.as_str())]),
            fact("subject_issuer", vec![string(&req.subject.issuer)]),
            fact("actor", vec![string(req.actor)]),
            fact("depth", vec![int(i64::from(req.depth))]),
            fact(
                "requested_ttl",
                vec![int(i64::try_from(req.requested_ttl).unwrap_or(i64::MAX))],
            ),
        ];
        if !req.subject.name.is_empty() {
            facts.push(fact("subject_name", vec![string(&req.subject.name)]));
        }
        if let Some(n) = req.next_actor {
            facts.push(fact("next_actor", vec![string(n)]));
        }
        for (i, a) in req.chain.iter().enumerate() {
            facts.push(fact(
                "chain_actor",
                vec![int(i64::try_from(i).unwrap_or(i64::MAX)), string(a)],
            ));
        }
        for r in req.requested_rights {
            facts.push(fact("requested_right", vec![string(r)]));
        }
        for f in facts {
            b = b.fact(f).map_err(|e| e.to_string())?;
        }
        let mut policies = Vec::new();
        for s in &self.statements {
            b = match &s.kind {
                Kind::Fact(f) => b.fact(f.clone()),
                Kind::Rule(r) => b.rule(r.clone()),
                Kind::Check(c) => b.check(c.clone()),
                Kind::Policy(p) => {
                    policies.push(s);
                    b.policy(p.clone())
                }
            }
            .map_err(|e| format!("{}:{}: {e}", s.file, s.line))?;
        }
        let mut a = b.build_unauthenticated().map_err(|e| e.to_string())?;
        let at = |i: usize| {
            policies.get(i).map_or_else(
                || format!("policy {i}"),
                |s| format!("{}:{}: {}", s.file, s.line, abbreviate(&s.text)),
            )
        };
        let (allowed, reason) = match a.authorize_with_limits(POLICY_LIMITS) {
            Ok(i) => (true, at(i)),
            Err(BiscuitError::FailedLogic(Logic::Unauthorized {
                policy: MatchedPolicy::Deny(i),
                checks,
            })) if checks.is_empty() => (false, at(i)),
            Err(BiscuitError::FailedLogic(Logic::Unauthorized { checks, .. }))
            | Err(BiscuitError::FailedLogic(Logic::NoMatchingPolicy { checks }))
                if !checks.is_empty() =>
            {
                (
                    false,
                    format!(
                        "a check of the policy failed: {}",
                        checks
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                )
            }
            Err(BiscuitError::FailedLogic(Logic::NoMatchingPolicy { .. })) => {
                (false, format!("no policy of {} matched", self.source))
            }
            Err(e) => return Err(format!("policy evaluation failed: {e}")),
        };
        let grants: Vec<(String,)> = a
            .query_with_limits("data($r) <- grant($r)", POLICY_LIMITS)
            .map_err(|e| e.to_string())?;
        let ttl: Vec<(i64,)> = a
            .query_with_limits("data($t) <- max_ttl($t)", POLICY_LIMITS)
            .map_err(|e| e.to_string())?;
        let depth: Vec<(i64,)> = a
            .query_with_limits("data($d) <- max_depth($d)", POLICY_LIMITS)
            .map_err(|e| e.to_string())?;
        Ok(PolicyOutcome {
            allowed,
            reason,
            grants: grants.into_iter().map(|(r,)| r).collect(),
            max_ttl: ttl
                .into_iter()
                .filter_map(|(t,)| u64::try_from(t).ok())
                .min(),
            max_depth: depth
                .into_iter()
                .filter_map(|(d,)| u32::try_from(d).ok())
                .min(),
        })
    }
}

fn fact(name: &str, terms: Vec<biscuit_auth::builder::Term>) -> Fact {
    biscuit_auth::builder::fact(name, &terms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SubjectKind;

    const TRAVEL: &str = r#"
// The planner may act for users of the corporate IdP.
may_act_for("spiffe://example.org/planner", "https://idp.example.com");
ceiling("spiffe://example.org/planner", "flights:read");
ceiling("spiffe://example.org/planner", "flights:book");
/* The planner may hand work to the search agent,
   which only reads. */
may_delegate("spiffe://example.org/planner", "spiffe://example.org/search");
ceiling("spiffe://example.org/search", "flights:read");

grant($r) <- operation("mint"), actor($a), ceiling($a, $r);
grant($r) <- operation("delegate"), next_actor($a), ceiling($a, $r);
max_ttl(600);
max_depth(2);

allow if operation("mint"), actor($a), subject_issuer($i), may_act_for($a, $i);
allow if operation("delegate"), actor($a), next_actor($n), may_delegate($a, $n);
deny if true;
"#;

    fn travel() -> PolicySet {
        PolicySet::from_sources(
            "policies",
            &[("policies/travel.datalog".into(), TRAVEL.into())],
        )
        .unwrap()
    }

    fn alice() -> Subject {
        Subject {
            id: "https://idp.example.com#alice".into(),
            kind: SubjectKind::User,
            issuer: "https://idp.example.com".into(),
            name: "alice@example.com".into(),
        }
    }

    fn rights(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_travel_policy_allows_what_it_says_and_nothing_else() {
        let p = travel();
        let subject = alice();
        let asked = rights(&["flights:read"]);
        let mint = |actor: &'static str| PolicyRequest {
            operation: Operation::Mint,
            subject: &subject,
            actor,
            next_actor: None,
            chain: &[],
            depth: 0,
            requested_rights: &asked,
            requested_ttl: 600,
        };
        let ok = p.evaluate(&mint("spiffe://example.org/planner")).unwrap();
        assert!(ok.allowed, "{ok}");
        assert!(
            ok.reason
                .starts_with("policies/travel.datalog:16: allow if"),
            "{}",
            ok.reason
        );
        assert_eq!(ok.grants, rights(&["flights:book", "flights:read"]));
        assert_eq!((ok.max_ttl, ok.max_depth), (Some(600), Some(2)));
        let no = p.evaluate(&mint("spiffe://example.org/intruder")).unwrap();
        assert!(!no.allowed);
        assert!(no.reason.contains(":18: deny if true"), "{}", no.reason);

        let chain = vec!["spiffe://example.org/planner".to_owned()];
        let hop = |next: &'static str| PolicyRequest {
            operation: Operation::Delegate,
            subject: &subject,
            actor: "spiffe://example.org/planner",
            next_actor: Some(next),
            chain: &chain,
            depth: 1,
            requested_rights: &asked,
            requested_ttl: 300,
        };
        let ok = p.evaluate(&hop("spiffe://example.org/search")).unwrap();
        assert!(ok.allowed, "{ok}");
        assert_eq!(ok.grants, rights(&["flights:read"]));
        assert!(
            !p.evaluate(&hop("spiffe://example.org/other"))
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let bad = |text: &str| {
            PolicySet::from_sources("p", &[("p/x.datalog".into(), text.into())])
                .unwrap_err()
                .to_string()
        };
        let e = bad("allow if true;\n\nfoo($x) <- bar($x;\n");
        assert!(e.starts_with("p/x.datalog:3: "), "{e}");
        let e = bad("allow if true;\n// fine\nright(\"a\")\n");
        assert!(
            e.starts_with("p/x.datalog:3: ") && e.contains("does not end with `;`"),
            "{e}"
        );
        let e = bad("allow if subjct($s);\n");
        assert!(
            e.starts_with("p/x.datalog:1: predicate `subjct` with 1 term(s)"),
            "{e}"
        );
        let e = bad("fact(\"a\");\n");
        assert_eq!(e, "p: no `allow if` policy: every request would be denied");
        let e = bad("allow if true;\n/* never closed\n");
        assert!(
            e.starts_with("p/x.datalog:2: unterminated /* comment"),
            "{e}"
        );
        // A `;` inside a string or a comment does not end a statement.
        let ok = PolicySet::from_sources(
            "p",
            &[(
                "p/x.datalog".into(),
                "// a; b\nname(\"x;y\");\nallow if name(\"x;y\");\n".into(),
            )],
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn a_directory_loads_in_name_order_without_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-facts.datalog"),
            "ceiling(\"a\", \"r\");\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("20-rules.datalog"),
            "grant($r) <- actor($a), ceiling($a, $r);\nallow if true;\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not datalog").unwrap();
        std::fs::create_dir(dir.path().join("examples")).unwrap();
        std::fs::write(dir.path().join("examples/x.datalog"), "broken(").unwrap();
        let p = PolicySet::load_dir(dir.path()).unwrap();
        assert_eq!(p.files().len(), 2);
        let subject = alice();
        let none = BTreeSet::new();
        let out = p
            .evaluate(&PolicyRequest {
                operation: Operation::Mint,
                subject: &subject,
                actor: "a",
                next_actor: None,
                chain: &[],
                depth: 0,
                requested_rights: &none,
                requested_ttl: 60,
            })
            .unwrap();
        assert!(out.allowed);
        assert_eq!(out.grants, rights(&["r"]));
        assert_eq!(out.max_ttl, None);
    }
}
