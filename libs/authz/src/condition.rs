//! ABAC conditions: a small expression language over `subject.*`,
//! `resource.*`, `action` and `context.*`, parsed and type-checked once at
//! write time, evaluated without allocation at decision time.
//!
//! ```json
//! {"all": [
//!   {"op": "eq", "attr": "subject.department", "value": "sales"},
//!   {"not": {"op": "cidr", "attr": "context.ip", "value": ["10.0.0.0/8"]}},
//!   {"any": [{"op": "between", "attr": "context.hour_utc", "value": [8, 17]}]}
//! ]}
//! ```
//!
//! A comparison on a missing attribute (or one of the wrong type) is false.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// Deepest nesting of `all` / `any` / `not` accepted.
pub const MAX_DEPTH: usize = 32;
/// Most comparisons in one condition.
pub const MAX_NODES: usize = 512;

/// Where an attribute comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `subject.*` (plus `subject.id`, `subject.roles`).
    Subject,
    /// `resource.*` (plus `resource.id`).
    Resource,
    /// `action`.
    Action,
    /// `context.*` (plus `context.time`, `context.hour_utc`, `context.weekday`).
    Context,
}

/// A parsed attribute path (`subject.department` → Subject, `department`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The root.
    pub root: Root,
    /// The field under the root (empty for `action`).
    pub field: String,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// Equal (string, number or boolean).
    Eq,
    /// Not equal.
    Ne,
    /// Attribute is one of the listed values.
    In,
    /// Attribute (a list) contains the value.
    Contains,
    /// Numeric less-than.
    Lt,
    /// Numeric less-or-equal.
    Le,
    /// Numeric greater-than.
    Gt,
    /// Numeric greater-or-equal.
    Ge,
    /// Numeric inclusive range `[low, high]`.
    Between,
    /// String starts with.
    Prefix,
    /// IP address inside one of the CIDRs.
    Cidr,
    /// Time (unix s or RFC 3339 UTC) strictly before.
    Before,
    /// Time strictly after.
    After,
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every child holds (true when empty).
    All(Vec<Condition>),
    /// Some child holds (false when empty).
    Any(Vec<Condition>),
    /// The child does not hold.
    Not(Box<Condition>),
    /// One comparison.
    Compare {
        /// The attribute.
        attr: Attr,
        /// The operator.
        op: Operator,
        /// The typed operand.
        operand: Operand,
    },
}

/// A comparison's typed right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A scalar (string, number, boolean).
    Scalar(Value),
    /// A list of scalars.
    Scalars(Vec<Value>),
    /// A number.
    Number(f64),
    /// A numeric range.
    Range(f64, f64),
    /// A string.
    Text(String),
    /// Networks.
    Networks(Vec<IpNet>),
    /// A time, unix seconds.
    Time(i64),
}

/// Why a condition was refused, with the JSON path of the fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConditionError {
    /// Where, e.g. `condition.all[2].value`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> ConditionError {
    ConditionError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn parse_attr(raw: &str, path: &str) -> Result<Attr, ConditionError> {
    if raw == "action" {
        return Ok(Attr {
            root: Root::Action,
            field: String::new(),
        });
    }
    let (root, field) = raw.split_once('.').ok_or_else(|| {
        err(
            path,
            format!("attribute {raw:?} must be subject.*, resource.*, action or context.*"),
        )
    })?;
    let root = match root {
        "subject" => Root::Subject,
        "resource" => Root::Resource,
        "context" => Root::Context,
        other => {
            return Err(err(
                path,
                format!(
                    "unknown attribute root {other:?}; use subject, resource, action or context"
                ),
            ));
        }
    };
    let valid_field = !field.is_empty()
        && field.len() <= 64
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_field {
        return Err(err(
            path,
            format!("attribute field {field:?} must be 1-64 of [A-Za-z0-9_-]"),
        ));
    }
    Ok(Attr {
        root,
        field: field.to_owned(),
    })
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (UTC only) into unix seconds.
#[expect(
    clippy::many_single_char_names,
    reason = "the civil-date algorithm's usual names"
)]
fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64().filter(|n| n.is_finite())
}

impl Condition {
    /// Parses and type-checks a condition document.
    pub fn parse(value: &Value) -> Result<Self, ConditionError> {
        let mut nodes = 0;
        Self::parse_at(value, "condition", 0, &mut nodes)
    }

    fn parse_at(
        value: &Value,
        path: &str,
        depth: usize,
        nodes: &mut usize,
    ) -> Result<Self, ConditionError> {
        if depth > MAX_DEPTH {
            return Err(err(path, format!("nested deeper than {MAX_DEPTH}")));
        }
        *nodes += 1;
        if *nodes > MAX_NODES {
            return Err(err(path, format!("more than {MAX_NODES} nodes")));
        }
        let object = value
            .as_object()
            .ok_or_else(|| err(path, "must be an object"))?;
        if let Some(children) = object.get("all").or_else(|| object.get("any")) {
            let all = object.contains_key("all");
            if object.len() != 1 {
                return Err(err(path, "an all/any node has exactly one key"));
            }
            let key = if all { "all" } else { "any" };
            let list = children
                .as_array()
                .ok_or_else(|| err(&format!("{path}.{key}"), "must be an array"))?;
            let parsed = list
                .iter()
                .enumerate()
                .map(|(i, child)| {
                    Self::parse_at(child, &format!("{path}.{key}[{i}]"), depth + 1, nodes)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if all {
                Self::All(parsed)
            } else {
                Self::Any(parsed)
            });
        }
        if let Some(child) = object.get("not") {
            if object.len() != 1 {
                return Err(err(path, "a not node has exactly one key"));
            }
            return Ok(Self::Not(Box::new(Self::parse_at(
                child,
                &format!("{path}.not"),
                depth + 1,
                nodes,
            )?)));
        }
        Self::parse_compare(object, path)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per operator reads best as one table"
    )]
    fn parse_compare(
        object: &serde_json::Map<String, Value>,
        path: &str,
    ) -> Result<Self, ConditionError> {
        for key in object.keys() {
            if !matches!(key.as_str(), "op" | "attr" | "value") {
                return Err(err(
                    path,
                    format!("unknown key {key:?}; a comparison has op, attr and value"),
                ));
            }
        }
        let op_name = object
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| err(path, "missing \"op\" (or all/any/not)"))?;
        let attr_raw = object
            .get("attr")
            .and_then(Value::as_str)
            .ok_or_else(|| err(&format!("{path}.attr"), "missing or not a string"))?;
        let attr = parse_attr(attr_raw, &format!("{path}.attr"))?;
        let value = object
            .get("value")
            .ok_or_else(|| err(&format!("{path}.value"), "missing"))?;
        let vpath = format!("{path}.value");
        let (op, operand) = match op_name {
            "eq" | "ne" => {
                if !is_scalar(value) {
                    return Err(err(
                        &vpath,
                        format!("{op_name} needs a string, number or boolean"),
                    ));
                }
                (
                    if op_name == "eq" {
                        Operator::Eq
                    } else {
                        Operator::Ne
                    },
                    Operand::Scalar(value.clone()),
                )
            }
            "in" => {
                let list = value
                    .as_array()
                    .filter(|l| l.iter().all(is_scalar) && l.len() <= 1024)
                    .ok_or_else(|| {
                        err(
                            &vpath,
                            "in needs an array of at most 1024 strings, numbers or booleans",
                        )
                    })?;
                (Operator::In, Operand::Scalars(list.clone()))
            }
            "contains" => {
                if !is_scalar(value) {
                    return Err(err(&vpath, "contains needs a string, number or boolean"));
                }
                (Operator::Contains, Operand::Scalar(value.clone()))
            }
            "lt" | "le" | "gt" | "ge" => {
                let n = number(value)
                    .ok_or_else(|| err(&vpath, format!("{op_name} needs a number")))?;
                let op = match op_name {
                    "lt" => Operator::Lt,
                    "le" => Operator::Le,
                    "gt" => Operator::Gt,
                    _ => Operator::Ge,
                };
                (op, Operand::Number(n))
            }
            "between" => {
                let pair = value
                    .as_array()
                    .filter(|l| l.len() == 2)
                    .ok_or_else(|| err(&vpath, "between needs [low, high]"))?;
                let (lo, hi) = (number(&pair[0]), number(&pair[1]));
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => (Operator::Between, Operand::Range(lo, hi)),
                    _ => return Err(err(&vpath, "between needs two numbers with low <= high")),
                }
            }
            "prefix" => {
                let s = value
                    .as_str()
                    .ok_or_else(|| err(&vpath, "prefix needs a string"))?;
                (Operator::Prefix, Operand::Text(s.to_owned()))
            }
            "cidr" => {
                let items: Vec<&Value> = match value {
                    Value::Array(list) => list.iter().collect(),
                    single => vec![single],
                };
                if items.is_empty() || items.len() > 256 {
                    return Err(err(&vpath, "cidr needs 1 to 256 networks"));
                }
                let nets = items
                    .iter()
                    .map(|v| {
                        let s = v.as_str().ok_or_else(|| {
                            err(&vpath, "cidr networks are strings like \"10.0.0.0/8\"")
                        })?;
                        s.parse::<IpNet>()
                            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                            .map_err(|_| {
                                err(&vpath, format!("{s:?} is not a CIDR network or IP address"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (Operator::Cidr, Operand::Networks(nets))
            }
            "before" | "after" => {
                let t = match value {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => parse_rfc3339_utc(s),
                    _ => None,
                }
                .ok_or_else(|| {
                    err(
                        &vpath,
                        format!("{op_name} needs unix seconds or \"YYYY-MM-DDTHH:MM:SSZ\""),
                    )
                })?;
                (
                    if op_name == "before" {
                        Operator::Before
                    } else {
                        Operator::After
                    },
                    Operand::Time(t),
                )
            }
            other => {
                return Err(err(
                    &format!("{path}.op"),
                    format!(
                        "unknown operator {other:?}; use eq, ne, in, contains, lt, le, gt, ge, between, prefix, cidr, before, after"
                    ),
                ));
            }
        };
        Ok(Self::Compare { attr, op, operand })
    }

    /// Whether the condition is the constant "true" (an empty `all`).
    #[must_use]
    pub fn is_always_true(&self) -> bool {
        matches!(self, Self::All(children) if children.is_empty())
    }

    /// Evaluates against attribute lookups (borrowed where the request holds
    /// the value, so evaluation does not allocate for ordinary attributes).
    pub(crate) fn eval<'v>(&self, lookup: &dyn Fn(&Attr) -> Option<Cow<'v, Value>>) -> bool {
        match self {
            Self::All(children) => children.iter().all(|c| c.eval(lookup)),
            Self::Any(children) => children.iter().any(|c| c.eval(lookup)),
            Self::Not(child) => !child.eval(lookup),
            Self::Compare { attr, op, operand } => {
                let Some(actual) = lookup(attr) else {
                    return false;
                };
                compare(&actual, *op, operand)
            }
        }
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(actual: &Value, op: Operator, operand: &Operand) -> bool {
    match (op, operand) {
        (Operator::Eq, Operand::Scalar(v)) => scalar_eq(actual, v),
        (Operator::Ne, Operand::Scalar(v)) => !scalar_eq(actual, v),
        (Operator::In, Operand::Scalars(list)) => list.iter().any(|v| scalar_eq(actual, v)),
        (Operator::Contains, Operand::Scalar(v)) => actual
            .as_array()
            .is_some_and(|l| l.iter().any(|x| scalar_eq(x, v))),
        (Operator::Lt | Operator::Le | Operator::Gt | Operator::Ge, Operand::Number(n)) => {
            number(actual).is_some_and(|a| match op {
                Operator::Lt => a < *n,
                Operator::Le => a <= *n,
                Operator::Gt => a > *n,
                _ => a >= *n,
            })
        }
        (Operator::Between, Operand::Range(lo, hi)) => {
            number(actual).is_some_and(|a| *lo <= a && a <= *hi)
        }
        (Operator::Prefix, Operand::Text(p)) => {
            actual.as_str().is_some_and(|s| s.starts_with(p.as_str()))
        }
        (Operator::Cidr, Operand::Networks(nets)) => actual
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        (Operator::Before | Operator::After, Operand::Time(t)) => {
            let a = match actual {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => parse_rfc3339_utc(s),
                _ => None,
            };
            a.is_some_and(|a| {
                if op == Operator::Before {
                    a < *t
                } else {
                    a > *t
                }
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(cond: &Value, attrs: &Value) -> bool {
        let c = Condition::parse(cond).unwrap();
        let lookup = |a: &Attr| -> Option<Cow<'_, Value>> {
            let root = match a.root {
                Root::Subject => "subject",
                Root::Resource => "resource",
                Root::Action => return attrs.get("action").map(Cow::Borrowed),
                Root::Context => "context",
            };
            attrs
                .get(root)
                .and_then(|r| r.get(&a.field))
                .map(Cow::Borrowed)
        };
        c.eval(&lookup)
    }

    #[test]
    fn every_operator_has_a_true_and_a_false_case() {
        let attrs = json!({
            "subject": {"dept": "sales", "level": 3, "tags": ["a", "b"], "vip": true},
            "resource": {"owner": "u1", "path": "/eu/x"},
            "context": {"ip": "10.1.2.3", "time": 1_700_000_000, "hour_utc": 9},
            "action": "read"
        });
        let cases = [
            (
                json!({"op":"eq","attr":"subject.dept","value":"sales"}),
                json!({"op":"eq","attr":"subject.dept","value":"hr"}),
            ),
            (
                json!({"op":"ne","attr":"subject.dept","value":"hr"}),
                json!({"op":"ne","attr":"subject.dept","value":"sales"}),
            ),
            (
                json!({"op":"eq","attr":"subject.vip","value":true}),
                json!({"op":"eq","attr":"subject.vip","value":false}),
            ),
            (
                json!({"op":"in","attr":"action","value":["read","list"]}),
                json!({"op":"in","attr":"action","value":["write"]}),
            ),
            (
                json!({"op":"contains","attr":"subject.tags","value":"b"}),
                json!({"op":"contains","attr":"subject.tags","value":"z"}),
            ),
            (
                json!({"op":"lt","attr":"subject.level","value":4}),
                json!({"op":"lt","attr":"subject.level","value":3}),
            ),
            (
                json!({"op":"le","attr":"subject.level","value":3}),
                json!({"op":"le","attr":"subject.level","value":2}),
            ),
            (
                json!({"op":"gt","attr":"subject.level","value":2}),
                json!({"op":"gt","attr":"subject.level","value":3}),
            ),
            (
                json!({"op":"ge","attr":"subject.level","value":3}),
                json!({"op":"ge","attr":"subject.level","value":4}),
            ),
            (
                json!({"op":"between","attr":"context.hour_utc","value":[8,17]}),
                json!({"op":"between","attr":"context.hour_utc","value":[10,17]}),
            ),
            (
                json!({"op":"prefix","attr":"resource.path","value":"/eu/"}),
                json!({"op":"prefix","attr":"resource.path","value":"/us/"}),
            ),
            (
                json!({"op":"cidr","attr":"context.ip","value":["10.0.0.0/8"]}),
                json!({"op":"cidr","attr":"context.ip","value":"192.168.0.0/16"}),
            ),
            (
                json!({"op":"before","attr":"context.time","value":"2030-01-01T00:00:00Z"}),
                json!({"op":"before","attr":"context.time","value":"2020-01-01T00:00:00Z"}),
            ),
            (
                json!({"op":"after","attr":"context.time","value":1_600_000_000}),
                json!({"op":"after","attr":"context.time","value":1_800_000_000}),
            ),
        ];
        for (yes, no) in cases {
            assert!(eval(&yes, &attrs), "{yes}");
            assert!(!eval(&no, &attrs), "{no}");
        }
    }

    #[test]
    fn combinators_and_missing_attributes() {
        let attrs = json!({"subject": {"dept": "sales"}});
        let t = json!({"op":"eq","attr":"subject.dept","value":"sales"});
        let f = json!({"op":"eq","attr":"subject.dept","value":"hr"});
        let missing = json!({"op":"eq","attr":"subject.nope","value":"x"});
        assert!(eval(&json!({"all":[t, t]}), &attrs));
        assert!(!eval(&json!({"all":[t, f]}), &attrs));
        assert!(eval(&json!({"any":[f, t]}), &attrs));
        assert!(!eval(&json!({"any":[]}), &attrs));
        assert!(eval(&json!({"all":[]}), &attrs));
        assert!(eval(&json!({"not": f}), &attrs));
        assert!(!eval(&missing, &attrs), "missing attributes compare false");
        assert!(eval(&json!({"not": missing}), &attrs));
    }

    #[test]
    fn write_time_errors_name_the_place() {
        let cases = [
            (
                json!({"op":"eq","attr":"user.x","value":1}),
                "condition.attr",
            ),
            (
                json!({"op":"lt","attr":"subject.level","value":"high"}),
                "condition.value",
            ),
            (
                json!({"op":"cidr","attr":"context.ip","value":["10.0.0.0/33"]}),
                "condition.value",
            ),
            (
                json!({"all":[{"op":"eq","attr":"subject.a","value":1},{"op":"nope","attr":"subject.a","value":1}]}),
                "condition.all[1].op",
            ),
            (
                json!({"op":"between","attr":"subject.a","value":[5,1]}),
                "condition.value",
            ),
            (
                json!({"op":"eq","attr":"subject.a","value":1,"extra":true}),
                "condition",
            ),
            (json!([1, 2]), "condition"),
        ];
        for (bad, path) in cases {
            let e = Condition::parse(&bad).unwrap_err();
            assert_eq!(e.path, path, "{bad}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut v = json!({"op":"eq","attr":"subject.a","value":1});
        for _ in 0..100 {
            v = json!({"not": v});
        }
        assert!(Condition::parse(&v).unwrap_err().message.contains("deeper"));
    }

    #[test]
    fn rfc3339_utc_parses_known_instants() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2026-11-23T09:00:00Z"),
            Some(1_795_424_400)
        );
        assert_eq!(parse_rfc3339_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("2026-11-23 09:00:00"), None);
    }
}
