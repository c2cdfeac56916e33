//! The configuration examples of `docs/operations.md` parse, and mean what
//! the guide says.

use zeo_config::{LogHandler, LogRotation, ServerConfig};

/// Every ```text block of the guide that is a ZConfig file (it starts
/// with a section).
fn config_blocks() -> Vec<String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"),
    )
    .unwrap();
    doc.split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|fenced| fenced.strip_prefix("text\n"))
        .filter(|body| body.starts_with('<'))
        .map(str::to_owned)
        .collect()
}

/// A block completed into a server configuration (a storage, and a
/// `<zeo>` when the block has none).
fn parse(block: &str) -> ServerConfig {
    let mut text = String::from("<filestorage>\n  path Data.fs\n</filestorage>\n");
    if !block.contains("<zeo>") {
        text.push_str("<zeo>\n  address 8100\n</zeo>\n");
    }
    text.push_str(block);
    ServerConfig::from_str(&text, "operations.md").unwrap_or_else(|e| panic!("{e}\n{block}"))
}

#[test]
fn the_guide_s_configuration_examples_parse() {
    let blocks = config_blocks();
    assert_eq!(blocks.len(), 2, "{blocks:#?}");
    let logs = parse(&blocks[0]);
    let LogHandler::File(file) = &logs.eventlog.as_ref().unwrap().handlers[0] else {
        panic!("a <logfile>");
    };
    assert_eq!(
        file.rotation,
        Some(LogRotation::Timed {
            when: "midnight".into(),
            interval: 1,
            old_files: 14
        })
    );
    let metrics = parse(&blocks[1]);
    assert!(metrics.zeo.metrics_address.is_some());
}
