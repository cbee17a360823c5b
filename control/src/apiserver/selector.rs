//! Label selectors as `?labelSelector=` carries them (apimachinery's `labels.Parse`):
//! `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`, joined
//! by commas. A malformed selector is an error (400), never "matches nothing".

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Eq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&ch) = chars.peek() {
        match ch {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' | '>' | '<' => {
                chars.next();
                out.push(match ch {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    '>' => Token::Gt,
                    _ => Token::Lt,
                });
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::NotEq);
                } else {
                    out.push(Token::Not);
                }
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                out.push(Token::Eq);
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "()!=,<>".contains(c) {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
        }
    }
    Ok(out)
}

/// A label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    }) && valid_value(name)
        && !name.is_empty()
}

/// A label value: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let tokens = lex(s)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        let bad = |what: String| format!("unable to parse requirement: {what}");
        while i < tokens.len() {
            let (neg, at) = match tokens[i] {
                Token::Not => (true, i + 1),
                _ => (false, i),
            };
            let Some(Token::Word(key)) = tokens.get(at) else {
                return Err(bad(format!(
                    "found {:?}, expected: identifier",
                    tokens.get(at)
                )));
            };
            if !valid_key(key) {
                return Err(bad(format!("invalid label key {key:?}")));
            }
            i = at + 1;
            let value = |i: usize| match tokens.get(i) {
                Some(Token::Word(v)) if valid_value(v) => Ok(v.clone()),
                // `k=` selects an empty value.
                None | Some(Token::Comma) => Ok(String::new()),
                t => Err(bad(format!("found {t:?}, expected: a label value"))),
            };
            let op = if neg {
                Op::DoesNotExist
            } else {
                match tokens.get(i) {
                    None | Some(Token::Comma) => Op::Exists,
                    Some(Token::Eq) => {
                        let v = value(i + 1)?;
                        i += usize::from(matches!(tokens.get(i + 1), Some(Token::Word(_))));
                        i += 1;
                        Op::In(vec![v])
                    }
                    Some(Token::NotEq) => {
                        let v = value(i + 1)?;
                        i += usize::from(matches!(tokens.get(i + 1), Some(Token::Word(_))));
                        i += 1;
                        Op::NotIn(vec![v])
                    }
                    Some(t @ (Token::Gt | Token::Lt)) => {
                        let n = match tokens.get(i + 1) {
                            Some(Token::Word(w)) => w
                                .parse::<i64>()
                                .map_err(|_| bad(format!("for {key}: {w:?} is not an integer")))?,
                            t => return Err(bad(format!("found {t:?}, expected: an integer"))),
                        };
                        let op = if *t == Token::Gt {
                            Op::Gt(n)
                        } else {
                            Op::Lt(n)
                        };
                        i += 2;
                        op
                    }
                    Some(Token::Word(w)) if w == "in" || w == "notin" => {
                        let is_in = w == "in";
                        if tokens.get(i + 1) != Some(&Token::Open) {
                            return Err(bad(format!(
                                "found {:?}, expected: '('",
                                tokens.get(i + 1)
                            )));
                        }
                        i += 2;
                        let mut set = Vec::new();
                        // After a value: a comma or the end of the set.
                        let mut after_value = false;
                        loop {
                            match tokens.get(i) {
                                Some(Token::Close) => {
                                    i += 1;
                                    break;
                                }
                                Some(Token::Comma) => {
                                    after_value = false;
                                    i += 1;
                                }
                                Some(Token::Word(v)) if valid_value(v) && !after_value => {
                                    set.push(v.clone());
                                    after_value = true;
                                    i += 1;
                                }
                                t => {
                                    return Err(bad(format!(
                                        "found {t:?}, expected: ',', ')' or a label value"
                                    )))
                                }
                            }
                        }
                        if is_in {
                            Op::In(set)
                        } else {
                            Op::NotIn(set)
                        }
                    }
                    t => return Err(bad(format!("found {t:?}, expected: an operator"))),
                }
            };
            reqs.push(Requirement {
                key: key.clone(),
                op,
            });
            match tokens.get(i) {
                None => break,
                Some(Token::Comma) => i += 1,
                t => return Err(bad(format!("found {t:?}, expected: ','"))),
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object with these labels (`metadata.labels`) is selected.
    pub fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|r| {
            let v = labels.get(&r.key).and_then(Value::as_str);
            match &r.op {
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kube_selector_grammar() {
        let l = json!({"app": "web", "tier": "front", "n": "5"});
        for (sel, want) in [
            ("", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in(db, cache)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app in (web),tier=front", true),
            ("app in (web), tier notin (front)", false),
            ("n>4", true),
            ("n<5", false),
            ("example.com/app", false),
        ] {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
        for bad in [
            "app in web",
            "app in (web",
            "=web",
            "app=web=x",
            "app in (we b)",
            "bad key=x",
            "n>x",
            "app=-x",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }
}
