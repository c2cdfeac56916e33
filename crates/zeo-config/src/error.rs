//! The crate's error type and the source locations every error carries.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A place in a configuration source: the file (or the name given to a string
/// source) and a 1-based line number.
///
/// Line 0 stands for "the file as a whole", used for problems that belong to
/// no particular line, such as a required section that is missing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// File path or source name as given to the parser.
    pub file: String,
    /// 1-based line number; 0 when the problem concerns the whole file.
    pub line: usize,
}

impl Location {
    /// A location at `line` of `file`.
    pub fn new(file: impl Into<String>, line: usize) -> Self {
        Location {
            file: file.into(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// Everything that can go wrong reading a configuration.
///
/// Each variant that stems from the text names where it happened, so the
/// `Display` form always starts with `file:line:`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file itself could not be read.
    #[error("{}: cannot read configuration file: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// A file is larger than we are willing to hold in memory.
    #[error("{}: configuration file is larger than {limit} bytes", path.display())]
    FileTooLarge {
        /// The offending file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },

    /// An `%include` target could not be read.
    #[error("{at}: cannot include {target:?}: {source}")]
    Include {
        /// Where the `%include` is.
        at: Location,
        /// The resolved path of the included file.
        target: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// `%include` directives nest deeper than the parser allows (usually a loop).
    #[error("{at}: %include nested more than {limit} levels deep (does a file include itself?)")]
    IncludeTooDeep {
        /// Where the innermost `%include` is.
        at: Location,
        /// The nesting limit.
        limit: usize,
    },

    /// A line that is neither blank, a comment, a section tag, a directive nor `key value`.
    #[error("{at}: malformed configuration line: {text:?}")]
    MalformedLine {
        /// Where.
        at: Location,
        /// The offending line, trimmed.
        text: String,
    },

    /// A `<...` line that is not a well-formed section start.
    #[error("{at}: malformed section start: {text:?}")]
    MalformedSectionStart {
        /// Where.
        at: Location,
        /// The offending line, trimmed.
        text: String,
    },

    /// A `</...` line that is not a well-formed section end.
    #[error("{at}: malformed section end: {text:?}")]
    MalformedSectionEnd {
        /// Where.
        at: Location,
        /// The offending line, trimmed.
        text: String,
    },

    /// A section end tag with no section open.
    #[error("{at}: </{found}> closes a section that was never opened")]
    UnexpectedSectionEnd {
        /// Where.
        at: Location,
        /// The type named in the end tag.
        found: String,
    },

    /// A section end tag whose type is not the type of the open section.
    #[error("{at}: </{found}> does not match <{expected}> opened at {opened}")]
    MismatchedSectionEnd {
        /// Where the end tag is.
        at: Location,
        /// The type of the section that is open.
        expected: String,
        /// The type named in the end tag.
        found: String,
        /// Where the open section started.
        opened: Location,
    },

    /// The text ended while a section was still open.
    #[error("{at}: section <{section_type}> is never closed (end of {file} reached)")]
    UnterminatedSection {
        /// Where the unclosed section starts.
        at: Location,
        /// Its type.
        section_type: String,
        /// The file whose end was reached.
        file: String,
    },

    /// A `%` directive other than `%define`, `%import` and `%include`.
    #[error("{at}: unknown directive %{directive}")]
    UnknownDirective {
        /// Where.
        at: Location,
        /// The directive name as written.
        directive: String,
    },

    /// A directive without its argument.
    #[error("{at}: missing argument to %{directive}")]
    MissingDirectiveArgument {
        /// Where.
        at: Location,
        /// The directive name.
        directive: String,
    },

    /// `%define` with a name that cannot be substituted.
    #[error("{at}: {name:?} is not a legal substitution name")]
    InvalidDefineName {
        /// Where.
        at: Location,
        /// The name as written.
        name: String,
    },

    /// `%define` of a name already defined with another value.
    #[error("{at}: cannot redefine {name:?}")]
    Redefinition {
        /// Where.
        at: Location,
        /// The (lower-cased) name.
        name: String,
    },

    /// A malformed `$` reference.
    #[error("{at}: bad substitution in {text:?}: {reason}")]
    BadSubstitution {
        /// Where.
        at: Location,
        /// The text being substituted.
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A `$NAME` or `$(NAME)` that has no value.
    #[error("{at}: no value for substitution name {name:?}")]
    UndefinedName {
        /// Where.
        at: Location,
        /// The name as written.
        name: String,
    },

    /// A key that the section type does not have.
    #[error("{at}: unknown key {key:?} in {section}")]
    UnknownKey {
        /// Where.
        at: Location,
        /// The key as written.
        key: String,
        /// The enclosing section, e.g. `<zeo>`.
        section: String,
    },

    /// A section type that may not appear here.
    #[error("{at}: unknown section <{section_type}> in {parent}")]
    UnknownSection {
        /// Where the section starts.
        at: Location,
        /// Its type.
        section_type: String,
        /// The enclosing section, or "the top level".
        parent: String,
    },

    /// A section type that exists in ZODB/ZEO but that this implementation cannot provide.
    #[error("{at}: <{section_type}> is not supported: {reason}")]
    UnsupportedSection {
        /// Where the section starts.
        at: Location,
        /// Its type.
        section_type: String,
        /// Why.
        reason: String,
    },

    /// A single-valued key given twice.
    #[error("{at}: key {key:?} in {section} given twice (first at {first})")]
    DuplicateKey {
        /// Where the second occurrence is.
        at: Location,
        /// The key as written.
        key: String,
        /// The enclosing section.
        section: String,
        /// Where the first occurrence is.
        first: Location,
    },

    /// A section that may appear once appears again.
    #[error("{at}: only one <{section_type}> section is allowed in {parent} (first at {first})")]
    DuplicateSection {
        /// Where the second one starts.
        at: Location,
        /// Its type.
        section_type: String,
        /// The enclosing section.
        parent: String,
        /// Where the first one starts.
        first: Location,
    },

    /// Two sections in the same container share a name.
    #[error("{at}: section name {name:?} is already used in {parent} (at {first})")]
    DuplicateSectionName {
        /// Where the second one starts.
        at: Location,
        /// The (lower-cased) name.
        name: String,
        /// The enclosing section.
        parent: String,
        /// Where the first one starts.
        first: Location,
    },

    /// A required key is absent.
    #[error("{at}: {section} is missing the required key {key:?}")]
    MissingKey {
        /// Where the section starts.
        at: Location,
        /// The missing key.
        key: String,
        /// The section lacking it.
        section: String,
    },

    /// A required section is absent.
    #[error("{at}: {what}")]
    MissingSection {
        /// The file (line 0) or enclosing section.
        at: Location,
        /// What is missing, as a sentence.
        what: String,
    },

    /// A value that its key's datatype does not accept.
    #[error("{at}: bad value {value:?} for {key:?}: {reason}")]
    InvalidValue {
        /// Where.
        at: Location,
        /// The key as written.
        key: String,
        /// The value after substitution.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Settings that are fine on their own but contradict each other.
    #[error("{at}: {message}")]
    Conflict {
        /// Where the later of the contradicting settings is.
        at: Location,
        /// What contradicts what.
        message: String,
    },
}

impl Error {
    /// Where in the configuration the error is, if it is tied to a place.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Read { .. } | Error::FileTooLarge { .. } => None,
            Error::Include { at, .. }
            | Error::IncludeTooDeep { at, .. }
            | Error::MalformedLine { at, .. }
            | Error::MalformedSectionStart { at, .. }
            | Error::MalformedSectionEnd { at, .. }
            | Error::UnexpectedSectionEnd { at, .. }
            | Error::MismatchedSectionEnd { at, .. }
            | Error::UnterminatedSection { at, .. }
            | Error::UnknownDirective { at, .. }
            | Error::MissingDirectiveArgument { at, .. }
            | Error::InvalidDefineName { at, .. }
            | Error::Redefinition { at, .. }
            | Error::BadSubstitution { at, .. }
            | Error::UndefinedName { at, .. }
            | Error::UnknownKey { at, .. }
            | Error::UnknownSection { at, .. }
            | Error::UnsupportedSection { at, .. }
            | Error::DuplicateKey { at, .. }
            | Error::DuplicateSection { at, .. }
            | Error::DuplicateSectionName { at, .. }
            | Error::MissingKey { at, .. }
            | Error::MissingSection { at, .. }
            | Error::InvalidValue { at, .. }
            | Error::Conflict { at, .. } => Some(at),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
