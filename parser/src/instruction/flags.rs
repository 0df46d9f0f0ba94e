//! Flag validation per instruction (BuildKit `BFlags` rules): unknown flag (with a suggestion),
//! duplicate flag, missing value, bad boolean.

use std::collections::BTreeMap;

use crate::{
    ast::{Flag, Node},
    error::ParseError,
    span::Span,
    suggest::with_suggestion,
};

/// The kinds of flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagType {
    /// `--name=value`, once.
    String,
    /// `--name=value`, repeatable.
    Strings,
    /// `--name`, `--name=true|false`.
    Bool,
}

/// The validated flags of one instruction.
#[derive(Debug, Default)]
pub(crate) struct Flags<'a> {
    values: BTreeMap<&'a str, Vec<(&'a str, Span)>>,
}

impl<'a> Flags<'a> {
    /// Checks `node`'s flags against the instruction's `allowed` set.
    pub fn parse(node: &'a Node, allowed: &[(&'static str, FlagType)]) -> Result<Self, ParseError> {
        let mut out = Flags::default();
        let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
        for Flag {
            name, value, span, ..
        } in &node.flags
        {
            let Some((_, ty)) = allowed.iter().find(|(n, _)| n == name) else {
                let msg = format!("unknown flag: {name}");
                let msg = if names.is_empty() {
                    format!("{msg} ({} takes no flags)", node.command())
                } else {
                    with_suggestion(msg, name, &names)
                };
                return Err(ParseError::new(*span, msg));
            };
            let entry = out.values.entry(name.as_str()).or_default();
            if !entry.is_empty() && *ty != FlagType::Strings {
                return Err(ParseError::new(
                    *span,
                    format!("duplicate flag specified: {name}"),
                ));
            }
            let v: &str = match (ty, value.as_deref()) {
                (FlagType::Bool, None) => "true",
                (FlagType::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true",
                    "false" => "false",
                    "" => {
                        return Err(ParseError::new(
                            *span,
                            format!("missing a value on flag: {name}"),
                        ));
                    }
                    _ => {
                        return Err(ParseError::new(
                            *span,
                            format!("expecting boolean value for flag {name}, not: {v}"),
                        ));
                    }
                },
                (_, None) => {
                    return Err(ParseError::new(
                        *span,
                        format!("missing a value on flag: {name}"),
                    ));
                }
                (_, Some(v)) => v,
            };
            entry.push((v, *span));
        }
        Ok(out)
    }

    pub fn string(&self, name: &str) -> Option<(String, Span)> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(|(s, sp)| (s.to_string(), *sp))
    }

    pub fn strings(&self, name: &str) -> Vec<(String, Span)> {
        self.values
            .get(name)
            .map(|v| v.iter().map(|(s, sp)| (s.to_string(), *sp)).collect())
            .unwrap_or_default()
    }

    pub fn bool(&self, name: &str) -> bool {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .is_some_and(|(s, _)| *s == "true")
    }
}
