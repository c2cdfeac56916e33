//! The generic ZConfig text format: a tree of sections holding `key value`
//! lines, with `%define`, `%include` and `%import` directives.
//!
//! The rules follow ZConfig's own parser (`ZConfig/cfgparser.py`):
//!
//! * every line is trimmed; blank lines and lines starting with `#` are
//!   ignored (a `#` later in a line is part of the value);
//! * `<type>`, `<type name>` open a section, `</type>` closes it, `<type/>`
//!   and `<type name/>` are empty sections; types and names are
//!   case-insensitive and are stored lower-cased, as ZConfig does (so a
//!   storage section `<filestorage Main>` is named `main`);
//! * `key value` adds a value (the value may be empty); keys are kept as
//!   written, the typed layers compare them case-insensitively;
//! * `%define NAME value` defines a substitution, `%include path` splices
//!   another file into the current section (paths are relative to the
//!   including file), `%import package` is recorded and otherwise ignored:
//!   in Python it loads schema components, which have no meaning here;
//! * `$NAME`, `${NAME}`, `$(ENVVAR)` and `$$` are substituted in values and
//!   directive arguments, never in section headers.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};
use crate::substitution::{is_name, substitute, SubstitutionError};

/// Largest configuration file [`Parser::parse_file`] and the file-system
/// includer will read. Real configurations are a few kilobytes; the cap only
/// stops a mistaken path (a database file, a device) from filling memory.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Deepest `%include` nesting accepted before assuming a loop.
pub const MAX_INCLUDE_DEPTH: usize = 32;

/// One section of a parsed configuration; the whole file is a root section
/// whose `type_name` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Lower-cased section type (`zeo`, `filestorage`, …); empty for the root.
    pub type_name: String,
    /// Lower-cased section name, if the header had one.
    pub name: Option<String>,
    /// Where the section header is (line 0 for the root).
    pub location: Location,
    /// The section's contents in file order.
    pub items: Vec<Item>,
}

/// One entry of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A `key value` line.
    Key(KeyValue),
    /// A nested section.
    Section(Section),
    /// An `%import package` directive.
    Import(Import),
}

/// A `key value` line after substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value with `$` references replaced; empty if the line had only a key.
    pub value: String,
    /// Where the line is.
    pub location: Location,
}

/// An `%import` directive, kept so tools can show it; it has no effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The package named, after substitution (e.g. `ZEO`).
    pub package: String,
    /// Where the directive is.
    pub location: Location,
}

impl Section {
    fn new(type_name: String, name: Option<String>, location: Location) -> Self {
        Section {
            type_name,
            name,
            location,
            items: Vec::new(),
        }
    }

    /// True for the root of a parsed file.
    pub fn is_root(&self) -> bool {
        self.type_name.is_empty()
    }

    /// The `key value` lines directly in this section.
    pub fn keys(&self) -> impl Iterator<Item = &KeyValue> {
        self.items.iter().filter_map(|i| match i {
            Item::Key(kv) => Some(kv),
            _ => None,
        })
    }

    /// The sections directly inside this one.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.items.iter().filter_map(|i| match i {
            Item::Section(s) => Some(s),
            _ => None,
        })
    }

    /// The `%import` directives directly in this section.
    pub fn imports(&self) -> impl Iterator<Item = &Import> {
        self.items.iter().filter_map(|i| match i {
            Item::Import(imp) => Some(imp),
            _ => None,
        })
    }

    /// The first value of `key` (compared case-insensitively).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys()
            .find(|kv| kv.key.eq_ignore_ascii_case(key))
            .map(|kv| kv.value.as_str())
    }

    /// All values of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.keys()
            .filter(move |kv| kv.key.eq_ignore_ascii_case(key))
            .map(|kv| kv.value.as_str())
    }

    /// Nested sections of type `type_name` (compared case-insensitively).
    pub fn sections_of<'a>(&'a self, type_name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections()
            .filter(move |s| s.type_name.eq_ignore_ascii_case(type_name))
    }
}

impl fmt::Display for Section {
    /// The section header as used in messages: `<zeo>`, `<filestorage 1>`,
    /// or `the top level` for the root.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return write!(f, "the top level of {}", self.location.file);
        }
        match &self.name {
            Some(name) => write!(f, "<{} {}>", self.type_name, name),
            None => write!(f, "<{}>", self.type_name),
        }
    }
}

/// Supplies the text of `%include`d files.
///
/// The default, [`FileSystem`], reads real files; tests and embedders can
/// serve files from memory instead.
pub trait Includer {
    /// Returns the text of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<String>;
}

/// Reads included files from the file system, up to [`MAX_FILE_SIZE`] bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSystem;

impl Includer for FileSystem {
    fn read(&self, path: &Path) -> io::Result<String> {
        read_bounded(path)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file is larger than {MAX_FILE_SIZE} bytes"),
            )
        })
    }
}

/// Reads a UTF-8 file, or `None` if it holds more than [`MAX_FILE_SIZE`] bytes.
fn read_bounded(path: &Path) -> io::Result<Option<String>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    // Reading one byte past the cap tells "exactly at the cap" from "over it"
    // without trusting the metadata length.
    file.take(MAX_FILE_SIZE + 1).read_to_string(&mut text)?;
    Ok((text.len() as u64 <= MAX_FILE_SIZE).then_some(text))
}

type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// A configurable parser; [`parse`] and [`parse_file`] use the defaults.
///
/// Defaults: `$(NAME)` reads the process environment, `%include` reads the
/// file system, and no names are predefined.
pub struct Parser {
    defines: HashMap<String, String>,
    env: EnvLookup,
    includer: Box<dyn Includer>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser")
            .field("defines", &self.defines)
            .finish_non_exhaustive()
    }
}

impl Parser {
    /// A parser with the default environment and include behaviour.
    pub fn new() -> Self {
        Parser {
            defines: HashMap::new(),
            env: Box::new(|name| std::env::var(name).ok()),
            includer: Box::new(FileSystem),
        }
    }

    /// Predefines `name` as if the text began with `%define name value`.
    /// Names are case-insensitive; a later `%define` with another value is
    /// an error, as in ZConfig.
    pub fn define(mut self, name: &str, value: &str) -> Self {
        self.defines
            .insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }

    /// Replaces the `$(NAME)` lookup (the process environment by default).
    pub fn environment(mut self, lookup: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.env = Box::new(lookup);
        self
    }

    /// Replaces where `%include`d files come from.
    pub fn includer(mut self, includer: impl Includer + 'static) -> Self {
        self.includer = Box::new(includer);
        self
    }

    /// Parses `text`; `source_name` names it in errors and is the base for
    /// relative `%include` paths (pass the file path if there is one).
    pub fn parse_str(&self, text: &str, source_name: &str) -> Result<Section> {
        let mut root = Section::new(String::new(), None, Location::new(source_name, 0));
        let mut defines = self.defines.clone();
        let mut run = Run {
            parser: self,
            defines: &mut defines,
        };
        run.parse_into(text, source_name, &mut root, 0)?;
        Ok(root)
    }

    /// Reads and parses the file at `path`.
    pub fn parse_file(&self, path: &Path) -> Result<Section> {
        let text = read_config_file(path)?;
        self.parse_str(&text, &path.to_string_lossy())
    }
}

/// Reads a configuration file with the size cap, mapping errors to [`Error`].
pub(crate) fn read_config_file(path: &Path) -> Result<String> {
    match read_bounded(path) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(Error::FileTooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_SIZE,
        }),
        Err(source) => Err(Error::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses `text` with the default [`Parser`].
pub fn parse(text: &str, source_name: &str) -> Result<Section> {
    Parser::new().parse_str(text, source_name)
}

/// Reads and parses `path` with the default [`Parser`].
pub fn parse_file(path: &Path) -> Result<Section> {
    Parser::new().parse_file(path)
}

/// State shared by a file and the files it includes.
struct Run<'p, 'd> {
    parser: &'p Parser,
    defines: &'d mut HashMap<String, String>,
}

/// A section being filled, with where it was opened.
struct Open {
    section: Section,
}

impl Run<'_, '_> {
    fn parse_into(
        &mut self,
        text: &str,
        file: &str,
        target: &mut Section,
        depth: usize,
    ) -> Result<()> {
        let mut stack: Vec<Open> = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let at = Location::new(file, index + 1);
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("</") {
                let Some(body) = rest.strip_suffix('>') else {
                    return Err(Error::MalformedSectionEnd {
                        at,
                        text: line.to_owned(),
                    });
                };
                let found = body.trim_end().to_lowercase();
                let Some(open) = stack.pop() else {
                    return Err(Error::UnexpectedSectionEnd { at, found });
                };
                if open.section.type_name != found {
                    return Err(Error::MismatchedSectionEnd {
                        at,
                        expected: open.section.type_name,
                        found,
                        opened: open.section.location,
                    });
                }
                let parent = match stack.last_mut() {
                    Some(p) => &mut p.section,
                    None => &mut *target,
                };
                parent.items.push(Item::Section(open.section));
            } else if let Some(rest) = line.strip_prefix('<') {
                let Some(body) = rest.strip_suffix('>') else {
                    return Err(Error::MalformedSectionStart {
                        at,
                        text: line.to_owned(),
                    });
                };
                let (body, empty) = match body.strip_suffix('/') {
                    Some(b) => (b, true),
                    None => (body, false),
                };
                let Some((type_name, name)) = split_header(body.trim_end()) else {
                    return Err(Error::MalformedSectionStart {
                        at,
                        text: line.to_owned(),
                    });
                };
                let section = Section::new(type_name, name, at);
                if empty {
                    let parent = match stack.last_mut() {
                        Some(p) => &mut p.section,
                        None => &mut *target,
                    };
                    parent.items.push(Item::Section(section));
                } else {
                    stack.push(Open { section });
                }
            } else if let Some(rest) = line.strip_prefix('%') {
                let current = match stack.last_mut() {
                    Some(p) => &mut p.section,
                    None => &mut *target,
                };
                self.directive(rest, line, at, current, depth)?;
            } else {
                let Some((key, value)) = split_key_value(line) else {
                    return Err(Error::MalformedLine {
                        at,
                        text: line.to_owned(),
                    });
                };
                let value = self.substitute(value, &at)?;
                let current = match stack.last_mut() {
                    Some(p) => &mut p.section,
                    None => &mut *target,
                };
                current.items.push(Item::Key(KeyValue {
                    key: key.to_owned(),
                    value,
                    location: at,
                }));
            }
        }
        if let Some(open) = stack.pop() {
            return Err(Error::UnterminatedSection {
                at: open.section.location,
                section_type: open.section.type_name,
                file: file.to_owned(),
            });
        }
        Ok(())
    }

    fn directive(
        &mut self,
        rest: &str,
        line: &str,
        at: Location,
        current: &mut Section,
        depth: usize,
    ) -> Result<()> {
        let Some((name, arg)) = split_key_value(rest) else {
            return Err(Error::MalformedLine {
                at,
                text: line.to_owned(),
            });
        };
        if !matches!(name, "define" | "import" | "include") {
            return Err(Error::UnknownDirective {
                at,
                directive: name.to_owned(),
            });
        }
        if arg.is_empty() {
            return Err(Error::MissingDirectiveArgument {
                at,
                directive: name.to_owned(),
            });
        }
        match name {
            "define" => {
                let (def_name, raw_value) = match arg.split_once(char::is_whitespace) {
                    Some((n, v)) => (n, v.trim_start()),
                    None => (arg, ""),
                };
                if !is_name(def_name) {
                    return Err(Error::InvalidDefineName {
                        at,
                        name: def_name.to_owned(),
                    });
                }
                let key = def_name.to_ascii_lowercase();
                let value = self.substitute(raw_value, &at)?;
                if let Some(old) = self.defines.get(&key) {
                    if *old != value {
                        return Err(Error::Redefinition { at, name: key });
                    }
                }
                self.defines.insert(key, value);
            }
            "import" => {
                let package = self.substitute(arg.trim(), &at)?;
                current.items.push(Item::Import(Import {
                    package,
                    location: at,
                }));
            }
            _ => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(Error::IncludeTooDeep {
                        at,
                        limit: MAX_INCLUDE_DEPTH,
                    });
                }
                let target = self.substitute(arg.trim(), &at)?;
                let path = resolve_include(&at.file, &target);
                let shown = path.to_string_lossy().into_owned();
                let text = self
                    .parser
                    .includer
                    .read(&path)
                    .map_err(|source| Error::Include {
                        at: at.clone(),
                        target: shown.clone(),
                        source,
                    })?;
                self.parse_into(&text, &shown, current, depth + 1)?;
            }
        }
        Ok(())
    }

    fn substitute(&self, text: &str, at: &Location) -> Result<String> {
        substitute(text, self.defines, &*self.parser.env).map_err(|e| match e {
            SubstitutionError::Syntax(reason) => Error::BadSubstitution {
                at: at.clone(),
                text: text.to_owned(),
                reason,
            },
            SubstitutionError::Undefined(name) => Error::UndefinedName {
                at: at.clone(),
                name,
            },
        })
    }
}

/// Splits `key value` the way ZConfig's `_keyvalue_rx` does: the key is a run
/// of characters other than whitespace and parentheses, the value is the rest
/// with leading whitespace removed.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .unwrap_or(line.len());
    if end == 0 {
        return None;
    }
    Some((&line[..end], line[end..].trim_start()))
}

/// Parses a section header body `type [name]` into lower-cased parts.
fn split_header(body: &str) -> Option<(String, Option<String>)> {
    let is_word =
        |w: &str| !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || c == '(' || c == ')');
    let (type_name, name) = match body.split_once(char::is_whitespace) {
        Some((t, n)) => (t, Some(n.trim_start())),
        None => (body, None),
    };
    if !is_word(type_name) {
        return None;
    }
    if let Some(n) = name {
        if !is_word(n) {
            return None;
        }
    }
    Some((type_name.to_lowercase(), name.map(str::to_lowercase)))
}

/// Resolves an `%include` target against the including file's directory.
fn resolve_include(including_file: &str, target: &str) -> PathBuf {
    let target = target.strip_prefix("file://").unwrap_or(target);
    let target = Path::new(target);
    if target.is_absolute() {
        return target.to_owned();
    }
    match Path::new(including_file).parent() {
        Some(dir) => dir.join(target),
        None => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_split() {
        assert_eq!(split_key_value("a b c"), Some(("a", "b c")));
        assert_eq!(split_key_value("a"), Some(("a", "")));
        assert_eq!(split_key_value("a\t  b"), Some(("a", "b")));
        assert_eq!(split_key_value("(a b"), None);
    }

    #[test]
    fn header_split() {
        assert_eq!(split_header("Zeo"), Some(("zeo".into(), None)));
        assert_eq!(
            split_header("FileStorage  Main"),
            Some(("filestorage".into(), Some("main".into())))
        );
        assert_eq!(split_header("a b c"), None);
        assert_eq!(split_header(""), None);
        assert_eq!(split_header(" a"), None);
    }

    #[test]
    fn include_resolution() {
        assert_eq!(
            resolve_include("/etc/zeo/zeo.conf", "storage.conf"),
            PathBuf::from("/etc/zeo/storage.conf")
        );
        assert_eq!(
            resolve_include("/etc/zeo/zeo.conf", "/abs.conf"),
            PathBuf::from("/abs.conf")
        );
        assert_eq!(
            resolve_include("zeo.conf", "file:///x/y.conf"),
            PathBuf::from("/x/y.conf")
        );
        assert_eq!(
            resolve_include("zeo.conf", "y.conf"),
            PathBuf::from("y.conf")
        );
    }
}
