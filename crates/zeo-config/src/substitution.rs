//! ZConfig's shell-like `$` substitution in values and directive arguments.
//!
//! Forms: `$$` is a literal dollar, `$name` and `${name}` look up a
//! `%define`d name (case-insensitively), `$(NAME)` reads an environment
//! variable (case-sensitively). Anything else after a `$` is an error.

use std::collections::HashMap;

/// Why a substitution failed; the parser adds the location.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubstitutionError {
    /// Malformed `$` syntax.
    Syntax(String),
    /// A name with no value, as written.
    Undefined(String),
}

/// True when `s` is a legal substitution name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_name(s: &str) -> bool {
    name_len(s) == s.len() && !s.is_empty()
}

/// Length in bytes of the substitution name at the start of `s` (0 if none).
fn name_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = if i == 0 {
            c.is_ascii_alphabetic() || c == '_'
        } else {
            c.is_ascii_alphanumeric() || c == '_'
        };
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Replaces every `$` reference in `text`.
///
/// `defines` holds lower-cased names; `env` answers `$(NAME)` lookups.
pub(crate) fn substitute(
    text: &str,
    defines: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SubstitutionError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(c) = after.chars().next() else {
            return Err(SubstitutionError::Syntax(
                "lone '$' at end of value (write '$$' for a dollar sign)".into(),
            ));
        };
        match c {
            '$' => {
                out.push('$');
                rest = &after[1..];
            }
            '{' | '(' => {
                let close = if c == '{' { '}' } else { ')' };
                let inner = &after[1..];
                let n = name_len(inner);
                if n == 0 {
                    return Err(SubstitutionError::Syntax(format!(
                        "'${c}' not followed by a name"
                    )));
                }
                let name = &inner[..n];
                if !inner[n..].starts_with(close) {
                    return Err(SubstitutionError::Syntax(format!(
                        "'${c}{name}' not followed by '{close}'"
                    )));
                }
                let value = if c == '{' {
                    defines.get(&name.to_ascii_lowercase()).cloned()
                } else {
                    env(name)
                };
                out.push_str(&value.ok_or_else(|| SubstitutionError::Undefined(name.to_owned()))?);
                rest = &inner[n + 1..];
            }
            _ => {
                let n = name_len(after);
                if n == 0 {
                    return Err(SubstitutionError::Syntax(
                        "'$' not followed by '$', '{', '(' or a name".into(),
                    ));
                }
                let name = &after[..n];
                let value = defines
                    .get(&name.to_ascii_lowercase())
                    .ok_or_else(|| SubstitutionError::Undefined(name.to_owned()))?;
                out.push_str(value);
                rest = &after[n..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn forms() {
        let d = defs(&[("home", "/srv"), ("port", "8100")]);
        assert_eq!(substitute("$home/var", &d, &no_env).unwrap(), "/srv/var");
        assert_eq!(substitute("${HOME}x", &d, &no_env).unwrap(), "/srvx");
        assert_eq!(substitute("a$$b", &d, &no_env).unwrap(), "a$b");
        assert_eq!(substitute(":$port", &d, &no_env).unwrap(), ":8100");
        assert_eq!(substitute("plain", &d, &no_env).unwrap(), "plain");
        let env = |n: &str| (n == "Z").then(|| "zz".to_string());
        assert_eq!(substitute("$(Z)/1", &d, &env).unwrap(), "zz/1");
        assert_eq!(
            substitute("$(z)", &d, &env),
            Err(SubstitutionError::Undefined("z".into()))
        );
    }

    #[test]
    fn errors() {
        let d = defs(&[]);
        for bad in ["x$", "$-", "${", "${a", "${}", "$(a", "$()"] {
            assert!(
                matches!(
                    substitute(bad, &d, &no_env),
                    Err(SubstitutionError::Syntax(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            substitute("$Nope", &d, &no_env),
            Err(SubstitutionError::Undefined("Nope".into()))
        );
    }

    #[test]
    fn names() {
        assert!(is_name("a_1"));
        assert!(is_name("_x"));
        assert!(!is_name("1a"));
        assert!(!is_name("a-b"));
        assert!(!is_name(""));
    }
}
