//! Helpers shared by the fuzz targets: turning a fuzzer's bytes into a safetensors file whose
//! data section is filled in, so the mutations land on the header rather than on tensor data,
//! and into a gallery folder's two files.
//! It must not hide failures: every target calls the library and only discards its `Result`.

/// Input layout shared by the safetensors targets. The first byte chooses the mode:
/// even: the rest is a whole safetensors file, as read from disk;
/// odd: the rest is only the JSON header, and the data section is synthesised to the length
/// the header's largest `data_offsets` end asks for (at most `MAX_SYNTH_DATA` bytes), filled
/// with small finite f32 values, so a mutated header still reaches the model builders.
pub fn safetensors_bytes(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 0 {
        return Some(rest.to_vec());
    }
    let end = data_end(rest).min(MAX_SYNTH_DATA);
    let mut out = Vec::with_capacity(8 + rest.len() + end);
    out.extend_from_slice(&(rest.len() as u64).to_le_bytes());
    out.extend_from_slice(rest);
    // 0.0625 · (1..=7): finite, small, positive (BN variances stay valid), cheap to write.
    out.extend((0..end / 4).flat_map(|i| (0.0625f32 * (1 + i % 7) as f32).to_le_bytes()));
    out.resize(8 + rest.len() + end, 0);
    Some(out)
}

/// The synthesised data section is capped so one input never asks for more than this.
pub const MAX_SYNTH_DATA: usize = 8 << 20;

/// The largest `data_offsets` end in a header, or 0 if it is not a JSON object of tensors.
fn data_end(header: &[u8]) -> usize {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(header)
    else {
        return 0;
    };
    map.values()
        .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .map_or(0, |e| e as usize)
}

/// Input layout of the `gallery` target: a mode byte, then `gallery.json`'s bytes, a NUL, and
/// `index.usearch`'s bytes (JSON text holds no NUL; the index may hold many, only the first one
/// splits). Even mode: `index_bytes` in the JSON is set to the index's real length, so mutations
/// of the index reach its check instead of failing the length test; odd: both files as given.
pub fn gallery_files(data: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    let split = rest.iter().position(|&b| b == 0)?;
    let (meta, index) = (&rest[..split], &rest[split + 1..]);
    if mode % 2 == 1 {
        return Some((meta.to_vec(), index));
    }
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(meta) else {
        return Some((meta.to_vec(), index));
    };
    map.insert("index_bytes".into(), (index.len() as u64).into());
    let meta = serde_json::to_vec(&serde_json::Value::Object(map)).ok()?;
    Some((meta, index))
}
