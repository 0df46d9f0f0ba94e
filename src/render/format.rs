//! `--format` as docker reads it: `table` (the default columns), `json` (one object per line),
//! or a Go template (`{{.ID}}`, `{{json .Config.Env}}`, `{{range}}`, `{{index}}`, `{{if}}`...),
//! prefixed by `table` for aligned columns under headers. Templates run on gtmpl (Go's
//! text/template for Rust) over the JSON docker would give, with docker's functions added:
//! `json`, `join`, `split`, `upper`, `lower`, `title`, `pad`, `truncate`, `println`. A template
//! that does not parse or names an unknown function is an error, never silent output.

use anyhow::Context as _;
use gtmpl::{Context, FuncError, Template, Value};

/// What `--format` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The command's default table.
    Table,
    /// One JSON object per line.
    Json,
    /// A Go template per object; `table` aligns the results under headers.
    Template { text: String, table: bool },
}

impl Format {
    /// Reads `--format`: a literal `\t` or `\n` (as a shell passes them through quotes) is a
    /// tab or a newline, as docker's formatter reads it.
    pub fn parse(s: &str) -> Format {
        let s = s.replace("\\t", "\t").replace("\\n", "\n");
        match s.trim() {
            "" | "table" => Format::Table,
            "json" => Format::Json,
            t => match t.strip_prefix("table ") {
                Some(rest) => Format::Template {
                    text: rest.to_string(),
                    table: true,
                },
                None => Format::Template {
                    text: t.to_string(),
                    table: false,
                },
            },
        }
    }
}

/// serde_json's value as gtmpl's.
fn to_gtmpl(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::Nil,
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect())
        }
    }
}

/// gtmpl's value as JSON (for `{{json X}}`), maps with sorted keys as Go's encoder writes them.
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into(),
            (_, Some(i), _) => i.into(),
            (_, _, Some(f)) => serde_json::Number::from_f64(f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            _ => serde_json::Value::Null,
        },
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            let sorted: std::collections::BTreeMap<&String, serde_json::Value> =
                o.iter().map(|(k, v)| (k, to_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
    }
}

/// A value as text, as Go's template prints it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn arg<'a>(name: &str, args: &'a [Value], n: usize) -> Result<&'a [Value], FuncError> {
    if args.len() < n {
        return Err(FuncError::AtLeastXArgs(name.into(), n));
    }
    Ok(args)
}

/// JSON as Go's encoder writes it: `<`, `>` and `&` escaped (`\u003c`...), as docker prints it.
pub fn go_json(v: &serde_json::Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("json", args, 1)?;
    Ok(Value::String(go_json(&to_json(&a[0]))))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("join", args, 2)?;
    let sep = text(&a[1]);
    let parts: Vec<String> = match &a[0] {
        Value::Array(items) => items.iter().map(text).collect(),
        other => vec![text(other)],
    };
    Ok(Value::String(parts.join(&sep)))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("split", args, 2)?;
    let sep = text(&a[1]);
    Ok(Value::Array(
        text(&a[0])
            .split(sep.as_str())
            .map(|s| Value::String(s.to_string()))
            .collect(),
    ))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        text(&arg("upper", args, 1)?[0]).to_uppercase(),
    ))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        text(&arg("lower", args, 1)?[0]).to_lowercase(),
    ))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(&arg("title", args, 1)?[0]);
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::String(out))
}

/// `pad S LEFT RIGHT`: spaces around.
fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("pad", args, 3)?;
    let n = |v: &Value| match v {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        _ => 0,
    };
    Ok(Value::String(format!(
        "{}{}{}",
        " ".repeat(n(&a[1])),
        text(&a[0]),
        " ".repeat(n(&a[2]))
    )))
}

/// `truncate S N`: at most N characters.
fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let a = arg("truncate", args, 2)?;
    let n = match &a[1] {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        _ => 0,
    };
    Ok(Value::String(text(&a[0]).chars().take(n).collect()))
}

fn println(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args.iter().map(text).collect();
    Ok(Value::String(format!("{}\n", parts.join(" "))))
}

/// A parsed template with docker's functions.
fn compile(template: &str) -> anyhow::Result<Template> {
    let mut t = Template::default();
    t.add_funcs(&[
        ("json", json as gtmpl::Func),
        ("join", join),
        ("split", split),
        ("upper", upper),
        ("lower", lower),
        ("title", title),
        ("pad", pad),
        ("truncate", truncate),
        ("println", println),
    ]);
    t.parse(template)
        .map_err(|e| anyhow::anyhow!("invalid --format template {template:?}: {e}"))?;
    Ok(t)
}

/// `template` run on `value`.
pub fn render(template: &str, value: &serde_json::Value) -> anyhow::Result<String> {
    compile(template)?
        .render(&Context::from(to_gtmpl(value)))
        .map_err(|e| anyhow::anyhow!("--format template {template:?}: {e}"))
}

/// Rows as `format` asks: `default` renders [`Format::Table`]; `headers` names each field's
/// column for a `table` template (`ID` → `CONTAINER ID`, docker's headers; a field not listed
/// is its own header, upper-cased).
pub fn rows(
    format: &Format,
    rows: &[serde_json::Value],
    headers: &[(&str, &str)],
    default: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    match format {
        Format::Table => Ok(default()),
        Format::Json => {
            let mut out = String::new();
            for r in rows {
                out.push_str(&go_json(r));
                out.push('\n');
            }
            Ok(out)
        }
        Format::Template { text, table } => {
            let t = compile(text)?;
            let mut lines = Vec::new();
            for r in rows {
                let line = t
                    .render(&Context::from(to_gtmpl(r)))
                    .with_context(|| format!("--format template {text:?}"))?;
                lines.push(line);
            }
            if !table {
                return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
            }
            // The header: the same template over each field's header name.
            let mut names = serde_json::Map::new();
            if let Some(serde_json::Value::Object(first)) = rows.first() {
                for k in first.keys() {
                    names.insert(k.clone(), k.to_uppercase().into());
                }
            }
            for (field, header) in headers {
                names.insert((*field).to_string(), (*header).into());
            }
            let header = t
                .render(&Context::from(to_gtmpl(&serde_json::Value::Object(names))))
                .unwrap_or_default();
            let split = |l: &str| -> Vec<String> { l.split('\t').map(str::to_string).collect() };
            let head = split(&header);
            let head: Vec<&str> = head.iter().map(String::as_str).collect();
            let body: Vec<Vec<String>> = lines.iter().map(|l| split(l)).collect();
            Ok(super::table::render(&head, &body))
        }
    }
}

/// Checks that `format` is usable before any work (an unparsable template is an error).
pub fn check(format: &Format) -> anyhow::Result<()> {
    if let Format::Template { text, .. } = format {
        compile(text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_templates() {
        let v = serde_json::json!({
            "Id": "sha256:abc",
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"k": "v"}, "Cmd": null},
            "State": {"Pid": 42, "Running": true},
        });
        let r = |t: &str| render(t, &v).unwrap();
        assert_eq!(r("{{.Id}}"), "sha256:abc");
        assert_eq!(r("{{.State.Pid}}"), "42");
        assert_eq!(r("{{json .Config.Env}}"), r#"["A=1","B=2"]"#);
        assert_eq!(r("{{json .Config.Labels}}"), r#"{"k":"v"}"#);
        assert_eq!(r(r#"{{index .Config.Labels "k"}}"#), "v");
        assert_eq!(r(r#"{{join .Config.Env ","}}"#), "A=1,B=2");
        assert_eq!(r("{{range .Config.Env}}[{{.}}]{{end}}"), "[A=1][B=2]");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}"), "up");
        assert_eq!(r("{{upper .Id}} {{len .Config.Env}}"), "SHA256:ABC 2");
        assert_eq!(r("{{json .Config.Cmd}}"), "null");
        assert_eq!(
            render("{{json .}}", &serde_json::json!({"Digest": "<none>"})).unwrap(),
            r#"{"Digest":"\u003cnone\u003e"}"#
        );
        // A list or a map printed as Go prints it (docker's `{{.Config.Env}}`), nested too.
        assert_eq!(r("{{.Config.Env}}"), "[A=1 B=2]");
        assert_eq!(r("{{.Config.Labels}}"), "map[k:v]");
        let nested = serde_json::json!({"P": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": []}});
        assert_eq!(
            render("{{.P}}", &nested).unwrap(),
            "map[53/udp:[] 80/tcp:[map[HostIp:0.0.0.0 HostPort:8080]]]"
        );
        assert!(render("{{.Id", &v).is_err());
        assert!(render("{{nosuchfunc .Id}}", &v).is_err());
    }

    #[test]
    fn tables_of_templates() {
        let rows_ = [
            serde_json::json!({"ID": "a1", "Names": "web"}),
            serde_json::json!({"ID": "b22", "Names": "db"}),
        ];
        // As a shell passes `table {{.ID}}\t{{.Names}}`: a backslash and a t.
        let f = Format::parse(r"table {{.ID}}\t{{.Names}}");
        let out = rows(&f, &rows_, &[("ID", "CONTAINER ID")], String::new).unwrap();
        assert_eq!(
            out,
            "CONTAINER ID   NAMES\na1             web\nb22            db\n"
        );
        let f = Format::parse("{{.Names}}");
        assert_eq!(rows(&f, &rows_, &[], String::new).unwrap(), "web\ndb\n");
        assert_eq!(Format::parse("json"), Format::Json);
        assert_eq!(Format::parse("table"), Format::Table);
    }
}
