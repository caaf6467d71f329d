//! Writes a `torch.save({"model": OrderedDict(...)})` zip file — what scene_graph_benchmark's
//! checkpointer saves — for tests that need a `.pth` at a size no fixture should have. The
//! pickle is protocol 2 with the same globals torch ≥ 1.6 writes: `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2` and persistent ids
//! `('storage', torch.FloatStorage, key, 'cpu', numel)`; storage `k` is `archive/data/k`.

use std::io::Write;
use std::path::Path;

struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, b: u8) {
        self.0.push(b);
    }
    fn unicode(&mut self, s: &str) {
        self.op(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn int(&mut self, v: usize) {
        self.op(b'J');
        self.0.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn tuple(&mut self, vals: &[usize]) {
        self.op(b'(');
        for &v in vals {
            self.int(v);
        }
        self.op(b't');
    }
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }
}

/// Saves `(key, shape, values)` tensors as `{"model": state_dict}` in torch's zip format.
pub fn save_state_dict(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> std::io::Result<()> {
    let mut p = Pickle(vec![0x80, 2]);
    p.op(b'}');
    p.unicode("model");
    p.ordered_dict();
    p.op(b'(');
    for (i, (key, shape, values)) in tensors.iter().enumerate() {
        p.unicode(key);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // persistent id tuple
        p.op(b'(');
        p.unicode("storage");
        p.global("torch", "FloatStorage");
        p.unicode(&i.to_string());
        p.unicode("cpu");
        p.int(values.len());
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.tuple(shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        p.tuple(&stride);
        p.op(0x89); // NEWFALSE: requires_grad
        p.ordered_dict(); // backward hooks
        p.op(b't');
        p.op(b'R');
    }
    p.op(b'u');
    p.op(b's');
    p.op(b'.');
    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts)?;
    zip.write_all(&p.0)?;
    for (i, (_, _, values)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), opts)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes)?;
    }
    zip.start_file("archive/version", opts)?;
    zip.write_all(b"3\n")?;
    zip.finish()?;
    Ok(())
}
