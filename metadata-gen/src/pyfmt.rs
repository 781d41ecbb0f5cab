//! Python-style text for values that QMK puts into its messages (`repr` of dicts, lists, numbers).

use serde_json::{Number, Value};

/// `str()` of a JSON number as Python holds it (int or float).
pub fn num(n: &Number) -> String {
    match n.as_i64() {
        Some(i) => i.to_string(),
        None => n
            .as_f64()
            .map_or_else(|| n.to_string(), crate::json::python_float_repr),
    }
}

fn string(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr()` of a value as Python's json would have loaded it.
pub fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => num(n),
        Value::String(s) => string(s),
        Value::Array(a) => format!("[{}]", a.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", string(k), repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python truthiness.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reprs() {
        assert_eq!(
            repr(&json!({"matrix": [0, 1], "x": 0.5, "label": "it's", "e": null, "b": true})),
            "{'matrix': [0, 1], 'x': 0.5, 'label': \"it's\", 'e': None, 'b': True}"
        );
        assert!(!truthy(&json!(0)));
        assert!(truthy(&json!("x")));
    }
}
