//! The TOML examples in README.md and docs/*.md are valid gateway configurations: the docs
//! cannot drift from the code.

use llmtrace_proxy::Config;

#[test]
fn every_toml_block_in_the_readme_is_a_valid_configuration() {
    assert!(check("README.md") >= 2);
}

#[test]
fn every_toml_block_of_the_sampling_docs_is_a_valid_configuration() {
    assert!(check("docs/sampling.md") >= 1);
}

#[test]
fn every_toml_block_of_the_slo_and_canary_docs_is_a_valid_configuration() {
    assert!(check("docs/slo.md") >= 1);
    assert!(check("docs/canary.md") >= 2);
}

/// Parses every TOML block of `file`; returns how many there were.
fn check(file: &str) -> usize {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(&path).expect(file);
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let after = &rest[start + "```toml\n".len()..];
        let end = after.find("```").expect("closed block");
        let mut text = after[..end].to_owned();
        rest = &after[end..];
        // Sections shown alone get the upstream and route every file needs.
        if !text.contains("[[upstreams]]") {
            text.push_str("\n[[upstreams]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\n");
            text.push_str("[[routes]]\nupstream = \"x\"\n");
        }
        Config::parse(&text, |_| Some("value".to_owned()))
            .unwrap_or_else(|e| panic!("{file} block {}: {e}\n{text}", blocks + 1));
        blocks += 1;
    }
    blocks
}
