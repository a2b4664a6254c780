//! SQL92 filter expressions on message properties, with RocketMQ's grammar (`FilterType.SQL92`,
//! `org.apache.rocketmq.filter`): comparisons (`= <> != > >= < <=`), `[NOT] BETWEEN`, `[NOT] IN`,
//! `IS [NOT] NULL`, `AND`, `OR`, `NOT`, parentheses, string literals in single quotes, numbers,
//! `TRUE`/`FALSE`. Identifiers name user properties; `TAGS` is the message tag.
//!
//! Parsing is sqlparser's; this module only accepts the subset above and evaluates it.
//! Evaluation is three-valued as in RocketMQ (from ActiveMQ's selectors): a comparison with a
//! missing property is unknown, and only a `TRUE` result selects the message. Properties are
//! strings on the wire; a comparison with a number converts the property to a number (a value that
//! is not a number makes the comparison unknown).

use std::collections::BTreeMap;

use sqlparser::ast::{BinaryOperator, Expr, InTarget, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::store::PROP_TAGS;

/// A literal of the expression.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
}

/// An operand: a property or a literal.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Prop(String),
    Lit(Lit),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(Operand, Cmp, Operand),
    Between { value: Operand, low: Operand, high: Operand, negated: bool },
    In { value: Operand, list: Vec<Operand>, negated: bool },
    IsNull { value: Operand, negated: bool },
    Const(Operand),
}

/// A parsed SQL92 filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    cond: Cond,
    text: String,
}

impl SqlFilter {
    /// Parses `expr`. Errors: the parse error, or the construct RocketMQ's grammar lacks, as a
    /// message quoting the expression.
    pub fn parse(expr: &str) -> Result<SqlFilter, String> {
        let fail = |m: String| format!("invalid SQL92 filter {expr:?}: {m}");
        let mut p = Parser::new(&GenericDialect {}).try_with_sql(expr).map_err(|e| fail(e.to_string()))?;
        let ast = p.parse_expr().map_err(|e| fail(e.to_string()))?;
        let next = p.peek_token();
        if next.token != Token::EOF {
            return Err(fail(format!("unexpected {} after the expression", next.token)));
        }
        Ok(SqlFilter { cond: cond(&ast).map_err(fail)?, text: expr.to_string() })
    }

    /// The expression as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True if the message with these properties (user properties, plus its tag under `TAGS`)
    /// is selected.
    pub fn matches(&self, props: &BTreeMap<String, String>) -> bool {
        eval(&self.cond, props) == Some(true)
    }
}

fn cond(e: &Expr) -> Result<Cond, String> {
    let b = |e: &Expr| cond(e).map(Box::new);
    Ok(match e {
        Expr::Nested(inner) => cond(inner)?,
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => Cond::And(b(left)?, b(right)?),
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => Cond::Or(b(left)?, b(right)?),
        Expr::UnaryOp { op: UnaryOperator::Not, expr } => Cond::Not(b(expr)?),
        Expr::BinaryOp { left, op, right } => {
            let cmp = match op {
                BinaryOperator::Eq => Cmp::Eq,
                BinaryOperator::NotEq => Cmp::Ne,
                BinaryOperator::Gt => Cmp::Gt,
                BinaryOperator::GtEq => Cmp::Ge,
                BinaryOperator::Lt => Cmp::Lt,
                BinaryOperator::LtEq => Cmp::Le,
                other => return Err(format!("operator {other} is not supported")),
            };
            Cond::Cmp(operand(left)?, cmp, operand(right)?)
        }
        Expr::Between { expr, negated, low, high } => {
            Cond::Between { value: operand(expr)?, low: operand(low)?, high: operand(high)?, negated: *negated }
        }
        Expr::In { expr, target: InTarget::List(list), negated, .. } => Cond::In {
            value: operand(expr)?,
            list: list.iter().map(operand).collect::<Result<_, _>>()?,
            negated: *negated,
        },
        Expr::IsNull(e) => Cond::IsNull { value: operand(e)?, negated: false },
        Expr::IsNotNull(e) => Cond::IsNull { value: operand(e)?, negated: true },
        Expr::Value(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Cond::Const(operand(e)?),
        other => return Err(format!("{other} is not supported")),
    })
}

fn operand(e: &Expr) -> Result<Operand, String> {
    Ok(match e {
        Expr::Nested(inner) => operand(inner)?,
        Expr::Identifier(id) if id.quote_style.is_some() => {
            return Err(format!("{id}: strings take single quotes, names none"))
        }
        Expr::Identifier(id) => Operand::Prop(id.value.clone()),
        Expr::CompoundIdentifier(ids) => {
            Operand::Prop(ids.iter().map(|i| i.value.as_str()).collect::<Vec<_>>().join("."))
        }
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match operand(expr)? {
            Operand::Lit(Lit::Num(n)) => Operand::Lit(Lit::Num(-n)),
            _ => return Err(format!("cannot negate {expr}")),
        },
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Operand::Lit(Lit::Num(n.parse().map_err(|_| format!("bad number {n}"))?)),
            Value::SingleQuotedString(s) => Operand::Lit(Lit::Str(s.clone())),
            Value::Boolean(b) => Operand::Lit(Lit::Bool(*b)),
            Value::Null => Operand::Null,
            other => return Err(format!("literal {other} is not supported (strings take single quotes)")),
        },
        other => return Err(format!("{other} is not a property or a literal")),
    })
}

fn value(o: &Operand, props: &BTreeMap<String, String>) -> Option<Lit> {
    match o {
        Operand::Prop(name) => {
            let key = if name == "TAGS" { PROP_TAGS } else { name.as_str() };
            props.get(key).map(|v| Lit::Str(v.clone()))
        }
        Operand::Lit(l) => Some(l.clone()),
        Operand::Null => None,
    }
}

/// Compares two values; `None` when they cannot be compared (unknown).
fn compare(a: &Lit, b: &Lit) -> Option<std::cmp::Ordering> {
    let num = |l: &Lit| match l {
        Lit::Num(n) => Some(*n),
        Lit::Str(s) => s.trim().parse::<f64>().ok(),
        Lit::Bool(_) => None,
    };
    match (a, b) {
        (Lit::Str(x), Lit::Str(y)) => Some(x.cmp(y)),
        (Lit::Bool(x), Lit::Bool(y)) => Some(x.cmp(y)),
        (Lit::Bool(x), Lit::Str(s)) | (Lit::Str(s), Lit::Bool(x)) => {
            s.parse::<bool>().ok().map(|y| if matches!(a, Lit::Bool(_)) { x.cmp(&y) } else { y.cmp(x) })
        }
        _ => num(a)?.partial_cmp(&num(b)?),
    }
}

fn eval(c: &Cond, props: &BTreeMap<String, String>) -> Option<bool> {
    use std::cmp::Ordering::*;
    match c {
        Cond::And(a, b) => match (eval(a, props), eval(b, props)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Cond::Or(a, b) => match (eval(a, props), eval(b, props)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Cond::Not(a) => eval(a, props).map(|v| !v),
        Cond::Cmp(l, op, r) => {
            let (l, r) = (value(l, props)?, value(r, props)?);
            let ord = compare(&l, &r);
            Some(match op {
                Cmp::Eq => ord? == Equal,
                Cmp::Ne => ord? != Equal,
                Cmp::Gt => ord? == Greater,
                Cmp::Ge => ord? != Less,
                Cmp::Lt => ord? == Less,
                Cmp::Le => ord? != Greater,
            })
        }
        Cond::Between { value: v, low, high, negated } => {
            let (v, lo, hi) = (value(v, props)?, value(low, props)?, value(high, props)?);
            let inside = compare(&v, &lo)? != Less && compare(&v, &hi)? != Greater;
            Some(inside != *negated)
        }
        Cond::In { value: v, list, negated } => {
            let v = value(v, props)?;
            let found = list.iter().filter_map(|o| value(o, props)).any(|l| compare(&v, &l) == Some(Equal));
            Some(found != *negated)
        }
        Cond::IsNull { value: v, negated } => Some(value(v, props).is_none() != *negated),
        Cond::Const(o) => match value(o, props)? {
            Lit::Bool(b) => Some(b),
            Lit::Str(s) => s.parse().ok(),
            Lit::Num(_) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn rocketmq_grammar_selects_as_rocketmq_does() {
        let m = props(&[("a", "10"), ("region", "eu"), (PROP_TAGS, "TagA"), ("flag", "true")]);
        for (expr, want) in [
            ("a > 5", true),
            ("a >= 10 AND a <= 10", true),
            ("a < 5", false),
            ("a BETWEEN 1 AND 10", true),
            ("a NOT BETWEEN 1 AND 10", false),
            ("region IN ('eu', 'us')", true),
            ("region NOT IN ('eu', 'us')", false),
            ("region = 'eu' AND TAGS = 'TagA'", true),
            ("region <> 'eu' OR a = 10", true),
            ("missing IS NULL", true),
            ("region IS NOT NULL", true),
            ("missing = 1", false),
            ("NOT (missing = 1)", false), // unknown stays unknown
            ("NOT (a = 1)", true),
            ("flag = TRUE", true),
            ("region > 3", false), // not a number: unknown
            ("a = -10 OR a = 10.0", true),
        ] {
            assert_eq!(SqlFilter::parse(expr).unwrap().matches(&m), want, "{expr}");
        }
    }

    #[test]
    fn invalid_expressions_are_refused_with_the_reason() {
        for bad in ["a >", "a = \"x\"", "a LIKE 'x%'", "a + 1 > 2", "a = 1 b", "(a = 1", "f(a) = 1"] {
            let e = SqlFilter::parse(bad).unwrap_err();
            assert!(e.starts_with("invalid SQL92 filter"), "{e}");
        }
    }
}
