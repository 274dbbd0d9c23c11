//! The JSONC reader and in-place editor of `mcpctl import` and `mcpctl install-client`
//! (ctl/src/jsonc.rs), driven the way they use it.
//!
//! `mcpctl` is a binary crate, so the module's source file is compiled in here as a module
//! (`#[path]`): the same code, no copy, and no library target or public API added to mcpctl.
//!
//! Beyond "never panics": comments and trailing commas are blanked without moving a byte,
//! plain JSON is read as JSON, the member spans `import` reads agree with the parsed value, and
//! an inserted or replaced server lands in the document while every other value stays.
#![no_main]

#[allow(dead_code)]
#[path = "../../ctl/src/jsonc.rs"]
mod jsonc;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let blanked = jsonc::to_json(text);
    assert_eq!(blanked.len(), text.len(), "offsets are kept");
    for (a, b) in text.bytes().zip(blanked.bytes()) {
        assert!(a == b || b == b' ', "a byte is kept or blanked");
        assert_eq!(a == b'\n', b == b'\n', "line breaks are kept");
    }
    if serde_json::from_str::<Value>(text).is_ok() {
        assert_eq!(blanked, text, "plain JSON is left alone");
    }
    let Ok(doc) = jsonc::parse(text) else {
        return;
    };
    let Value::Object(root) = &doc else {
        return;
    };

    // `import` reads a client's servers from the member spans of its map.
    let servers = root.get("mcpServers");
    if let Some(Value::Object(map)) = servers {
        let span = jsonc::find(&blanked, &["mcpServers"]).expect("a parsed member is found");
        let members = jsonc::members(&blanked, span);
        assert_eq!(members.len(), map.len(), "one span per member");
        for m in &members {
            let value: Value = serde_json::from_str(&blanked[m.value.start..m.value.end])
                .expect("a member's span holds its value");
            assert_eq!(Some(&value), map.get(&m.key), "member {}", m.key);
        }
    }

    // `import` adds a server: into `mcpServers`, or a new `mcpServers` at the top.
    let entry = json!({"command": "mcp-shim", "args": ["--profile", "x"]});
    let name = "fuzz-new";
    let out = match servers {
        Some(Value::Object(map)) if !map.contains_key(name) => {
            let span = jsonc::find(&blanked, &["mcpServers"]).expect("found above");
            jsonc::insert_members(text, span, &[(name.to_owned(), entry.clone())])
        }
        None => jsonc::insert_members(
            text,
            jsonc::root(&blanked),
            &[("mcpServers".to_owned(), json!({ name: entry.clone() }))],
        ),
        _ => return,
    };
    let mut expected = doc.clone();
    expected["mcpServers"][name] = entry.clone();
    let reread = match jsonc::parse(&out) {
        Ok(v) => v,
        Err(e) => panic!("the edited text does not parse: {e:#}\n{out}"),
    };
    assert_eq!(reread, expected, "only the new server was added\n{out}");

    // `install-client` replaces a map with its own entry.
    if let Some(span) = jsonc::find(&blanked, &["mcpServers"]) {
        let out = jsonc::replace_value(text, span, &entry);
        let reread = jsonc::parse(&out).expect("the replaced text parses");
        let mut expected = doc.clone();
        expected["mcpServers"] = entry;
        assert_eq!(reread, expected, "only the map was replaced\n{out}");
    }
});
