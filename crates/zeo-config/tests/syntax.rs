//! The generic ZConfig text format: structure, directives, substitution and
//! every syntax error with its file:line.

mod common;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use common::expect_err;
use zeo_config::syntax::{Includer, Item, Parser};
use zeo_config::{parse, Error, Section};

fn no_env() -> Parser {
    Parser::new().environment(|_| None)
}

/// Serves `%include`d files from memory.
struct Files(HashMap<PathBuf, String>);

impl Includer for Files {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
}

fn files(pairs: &[(&str, &str)]) -> Files {
    Files(
        pairs
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect(),
    )
}

fn err(text: &str) -> Error {
    expect_err(no_env().parse_str(text, "t.conf"))
}

#[test]
fn structure_comments_and_case() {
    let text = "\
# leading comment

<ZEO>
  Address  localhost:8100   
  # comment inside
  read-only
</zeo>
<FileStorage Main>
  path /tmp/Data.fs # not a comment
</FILESTORAGE>
<mappingstorage/>
<demostorage x />
";
    let root = parse(text, "t.conf").unwrap();
    assert!(root.is_root());
    let sections: Vec<&Section> = root.sections().collect();
    assert_eq!(sections.len(), 4);

    let zeo = sections[0];
    assert_eq!(zeo.type_name, "zeo");
    assert_eq!(zeo.name, None);
    assert_eq!(zeo.location.line, 3);
    // Keys keep their spelling; lookups ignore case. Values are trimmed.
    let keys: Vec<_> = zeo.keys().collect();
    assert_eq!(keys[0].key, "Address");
    assert_eq!(keys[0].value, "localhost:8100");
    assert_eq!(keys[0].location.line, 4);
    assert_eq!(zeo.get("address"), Some("localhost:8100"));
    assert_eq!(zeo.get("READ-ONLY"), Some(""));

    // Section names are folded to lower case, like ZConfig does.
    let fs = sections[1];
    assert_eq!(fs.type_name, "filestorage");
    assert_eq!(fs.name.as_deref(), Some("main"));
    assert_eq!(fs.get("path"), Some("/tmp/Data.fs # not a comment"));

    assert_eq!(sections[2].type_name, "mappingstorage");
    assert!(sections[2].items.is_empty());
    assert_eq!(sections[3].name.as_deref(), Some("x"));
    assert_eq!(sections[1].to_string(), "<filestorage main>");
}

#[test]
fn nesting_and_multikeys() {
    let text = "<zodb>\n <zeoclient>\n  server a:1\n  server b:2\n </zeoclient>\n</zodb>\n";
    let root = parse(text, "c.conf").unwrap();
    let zodb = root.sections_of("zodb").next().unwrap();
    let client = zodb.sections_of("ZEOCLIENT").next().unwrap();
    assert_eq!(client.get_all("server").collect::<Vec<_>>(), ["a:1", "b:2"]);
    assert_eq!(client.location.line, 2);
}

#[test]
fn define_and_substitution() {
    let text = "\
%define base /srv/zeo
%define PORT 8100
%define empty
%define both $base:$port
<zeo>
  address ${PORT}
  path $BASE/Data.fs
  price $$5
  both $both
  nothing x${empty}y
</zeo>
";
    let root = no_env().parse_str(text, "t.conf").unwrap();
    let zeo = root.sections().next().unwrap();
    assert_eq!(zeo.get("address"), Some("8100"));
    assert_eq!(zeo.get("path"), Some("/srv/zeo/Data.fs"));
    assert_eq!(zeo.get("price"), Some("$5"));
    assert_eq!(zeo.get("both"), Some("/srv/zeo:8100"));
    assert_eq!(zeo.get("nothing"), Some("xy"));
}

#[test]
fn section_headers_are_not_substituted() {
    let root = no_env()
        .parse_str("%define n 7\n<filestorage $n>\n</filestorage>\n", "t")
        .unwrap();
    assert_eq!(root.sections().next().unwrap().name.as_deref(), Some("$n"));
}

#[test]
fn predefined_names_and_environment() {
    let parser = Parser::new()
        .define("Home", "/h")
        .environment(|n| (n == "ZEO_PORT").then(|| "9000".to_string()));
    let root = parser
        .parse_str("a $home\nb $(ZEO_PORT)\n%define home /h\n", "t")
        .unwrap();
    assert_eq!(root.get("a"), Some("/h"));
    assert_eq!(root.get("b"), Some("9000"));
    // Same value again is allowed; a different one is not.
    let e = parser.parse_str("%define home /other\n", "t").unwrap_err();
    assert!(matches!(e, Error::Redefinition { .. }), "{e}");
}

#[test]
fn import_is_recorded_and_ignored() {
    let root = parse("%import ZEO\n<zodb>\n  %import ZEO.tests\n</zodb>\n", "t").unwrap();
    let imports: Vec<_> = root.imports().map(|i| i.package.as_str()).collect();
    assert_eq!(imports, ["ZEO"]);
    let zodb = root.sections().next().unwrap();
    assert!(
        matches!(&zodb.items[0], Item::Import(i) if i.package == "ZEO.tests" && i.location.line == 3)
    );
}

#[test]
fn include_splices_into_current_section_relative_to_the_file() {
    let parser = no_env().includer(files(&[
        (
            "/etc/zeo/storage.conf",
            "%define dir /data\n<filestorage 1>\n  path $dir/Data.fs\n</filestorage>\n",
        ),
        ("/etc/zeo/keys.conf", "read-only true\n"),
    ]));
    let text = "<zeo>\n  %include keys.conf\n</zeo>\n%include storage.conf\nafter $dir\n";
    let root = parser.parse_str(text, "/etc/zeo/zeo.conf").unwrap();
    let zeo = root.sections_of("zeo").next().unwrap();
    assert_eq!(zeo.get("read-only"), Some("true"));
    assert_eq!(
        zeo.keys().next().unwrap().location.to_string(),
        "/etc/zeo/keys.conf:1"
    );
    let fs = root.sections_of("filestorage").next().unwrap();
    assert_eq!(fs.get("path"), Some("/data/Data.fs"));
    assert_eq!(fs.location.to_string(), "/etc/zeo/storage.conf:2");
    // Defines made in an included file stay visible afterwards, as in ZConfig.
    assert_eq!(root.get("after"), Some("/data"));
}

#[test]
fn include_errors() {
    let parser = no_env().includer(files(&[
        ("/d/loop.conf", "%include loop.conf\n"),
        ("/d/open.conf", "<zeo>\n"),
    ]));
    let e = parser
        .parse_str("%include missing.conf\n", "/d/main.conf")
        .unwrap_err();
    assert!(matches!(e, Error::Include { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("/d/main.conf:1: cannot include \"/d/missing.conf\""),
        "{e}"
    );

    let e = parser
        .parse_str("%include loop.conf\n", "/d/main.conf")
        .unwrap_err();
    assert!(matches!(e, Error::IncludeTooDeep { .. }), "{e}");
    assert!(e.to_string().starts_with("/d/loop.conf:1:"), "{e}");

    // Sections must be balanced within each file.
    let e = parser
        .parse_str("%include open.conf\n</zeo>\n", "/d/main.conf")
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/d/open.conf:1: section <zeo> is never closed"),
        "{e}"
    );
}

#[test]
fn include_from_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inc.conf"), "x 1\n").unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "%include inc.conf\ny 2\n").unwrap();
    let root = zeo_config::parse_file(&main).unwrap();
    assert_eq!(root.get("x"), Some("1"));
    assert_eq!(root.get("y"), Some("2"));

    let e = zeo_config::parse_file(&dir.path().join("absent.conf")).unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e}");
}

#[test]
fn crlf_line_endings() {
    let root = parse("<zeo>\r\n  address 1\r\n</zeo>\r\n", "t").unwrap();
    assert_eq!(root.sections().next().unwrap().get("address"), Some("1"));
}

#[test]
fn unterminated_section() {
    let e = err("<zeo>\n  address 1\n<filestorage>\n</filestorage>\n");
    assert!(matches!(e, Error::UnterminatedSection { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "t.conf:1: section <zeo> is never closed (end of t.conf reached)"
    );
}

#[test]
fn mismatched_close_tag() {
    let e = err("<zeo>\n  address 1\n</filestorage>\n");
    assert_eq!(
        e.to_string(),
        "t.conf:3: </filestorage> does not match <zeo> opened at t.conf:1"
    );
}

#[test]
fn unexpected_close_tag() {
    let e = err("\n</zeo>\n");
    assert!(matches!(e, Error::UnexpectedSectionEnd { .. }), "{e}");
    assert!(e.to_string().starts_with("t.conf:2:"), "{e}");
}

#[test]
fn malformed_lines() {
    let cases: &[(&str, usize)] = &[
        ("<zeo\n", 1),
        ("\n<zeo a b>\n", 2),
        ("<>\n", 1),
        ("< zeo>\n", 1),
        ("</zeo\n", 1),
        ("x 1\n(bad\n", 2),
        ("%\n", 1),
    ];
    for (text, line) in cases {
        let e = err(text);
        assert_eq!(
            e.location().map(|l| l.line),
            Some(*line),
            "{text:?} gave {e}"
        );
        assert!(e.to_string().starts_with(&format!("t.conf:{line}:")), "{e}");
    }
}

#[test]
fn directive_errors() {
    let e = err("%foo bar\n");
    assert_eq!(e.to_string(), "t.conf:1: unknown directive %foo");
    let e = err("%define\n");
    assert_eq!(e.to_string(), "t.conf:1: missing argument to %define");
    let e = err("%include\n");
    assert!(matches!(e, Error::MissingDirectiveArgument { .. }), "{e}");
    let e = err("%define 9lives x\n");
    assert!(matches!(e, Error::InvalidDefineName { .. }), "{e}");
    let e = err("%define a 1\n%define A 2\n");
    assert_eq!(e.to_string(), "t.conf:2: cannot redefine \"a\"");
}

#[test]
fn substitution_errors() {
    let e = err("\nx $nope\n");
    assert_eq!(
        e.to_string(),
        "t.conf:2: no value for substitution name \"nope\""
    );
    let e = err("x cost$\n");
    assert!(matches!(e, Error::BadSubstitution { .. }), "{e}");
    assert!(e.to_string().starts_with("t.conf:1:"), "{e}");
    let e = err("x ${unclosed\n");
    assert!(matches!(e, Error::BadSubstitution { .. }), "{e}");
    let e = err("x $(HOME)\n");
    assert!(matches!(e, Error::UndefinedName { .. }), "{e}");
}
