//! `bridgeface._native`: the Python face of the library (PyO3) — the student, the teacher, the
//! detector and the gallery. It converts Python inputs, releases the GIL around every model or
//! index call, and maps `bridgeface::Error` to `BridgefaceError`; it must hold no model logic.

use bridgeface::data::image::{self, Rgb8};
use bridgeface::embed;
use bridgeface::gallery::{self, IndexSettings, ModelTag};
use bridgeface::model::detector::Detector;
use bridgeface::model::graph::Graph;
use bridgeface::model::student::{StudentInfo, StudentNet};
use bridgeface::model::teacher::{Teacher as TeacherNet, TEACHER_RESOLUTION, TEACHER_THRESHOLD};
use bridgeface::weights::WeightFile;
use bridgeface::{cpu, Error, Tensor};
use numpy::ndarray::{Array2, Array3, Axis};
use numpy::{
    IntoPyArray, PyArray2, PyArray3, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1,
    PyReadonlyArray2, PyReadonlyArray4, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

create_exception!(
    _native,
    BridgefaceError,
    PyException,
    "A bridgeface failure; the message is the CLI's one-line error, without `error: `."
);

fn py_err(e: Error) -> PyErr {
    BridgefaceError::new_err(e.to_string())
}

fn invalid(msg: String) -> PyErr {
    py_err(Error::InvalidArgument(msg))
}

/// One image as Python gave it; decoding waits until the GIL is released.
enum Source {
    Pixels(Rgb8),
    Path(PathBuf),
    Bytes(Vec<u8>, usize),
}

impl Source {
    fn decode(self) -> bridgeface::Result<Rgb8> {
        match self {
            Source::Pixels(img) => Ok(img),
            Source::Path(p) => image::load_rgb8(&p),
            Source::Bytes(b, i) => image::decode_rgb8(format!("<bytes item {i}>"), &b),
        }
    }
}

/// Faces per forward pass in `Gallery.build`, which bounds its memory on large folders.
const BUILD_BATCH: usize = 256;

const INPUT_HELP: &str =
    "pass a uint8 NumPy array N×H×W×3, or a list of image paths or encoded image bytes";

/// A uint8 array `H×W×3` (one image) or `N×H×W×3` (a batch) into images.
fn pixels_from_array(arr: &Bound<'_, PyUntypedArray>, batch: bool) -> PyResult<Vec<Source>> {
    let want = if batch { 4 } else { 3 };
    let ok_dtype = arr.dtype().is_equiv_to(&numpy::dtype::<u8>(arr.py()));
    if !ok_dtype || arr.ndim() != want || arr.shape()[want - 1] != 3 {
        return Err(invalid(format!(
            "images: got a {} array of shape {:?}; {}",
            arr.dtype(),
            arr.shape(),
            if batch {
                INPUT_HELP
            } else {
                "pass a uint8 NumPy array H×W×3, an image path or encoded image bytes"
            }
        )));
    }
    let view = if batch {
        arr.cast::<numpy::PyArray4<u8>>()?.readonly()
    } else {
        let a3 = arr.cast::<numpy::PyArray3<u8>>()?.readonly();
        let a = a3.as_array();
        let (h, w) = (a.shape()[0], a.shape()[1]);
        let img = Rgb8::from_strided(w, h, w * 3, &a.iter().copied().collect::<Vec<u8>>())
            .map_err(py_err)?;
        return Ok(vec![Source::Pixels(img)]);
    };
    let a = PyReadonlyArray4::as_array(&view);
    let (h, w) = (a.shape()[1], a.shape()[2]);
    a.axis_iter(Axis(0))
        .map(|one| {
            let px: Vec<u8> = one.iter().copied().collect();
            Rgb8::from_strided(w, h, w * 3, &px)
                .map(Source::Pixels)
                .map_err(py_err)
        })
        .collect()
}

/// One path, `bytes`, or (when `allow_array`) a uint8 H×W×3 array.
fn one_source(obj: &Bound<'_, PyAny>, index: usize, allow_array: bool) -> PyResult<Source> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Source::Bytes(b.as_bytes().to_vec(), index));
    }
    if allow_array {
        if let Ok(arr) = obj.cast::<PyUntypedArray>() {
            return Ok(pixels_from_array(arr, false)?.remove(0));
        }
    }
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(Source::Path(p));
    }
    Err(invalid(format!(
        "images: item {index} is a {}; {INPUT_HELP}",
        obj.get_type().name()?
    )))
}

/// The `images` argument of `embed`: an N×H×W×3 uint8 array or a sequence of paths/bytes.
fn sources(images: &Bound<'_, PyAny>) -> PyResult<Vec<Source>> {
    if let Ok(arr) = images.cast::<PyUntypedArray>() {
        return pixels_from_array(arr, true);
    }
    if images.is_instance_of::<pyo3::types::PyString>() || images.cast::<PyBytes>().is_ok() {
        return Err(invalid(format!(
            "images: got a single {}; {INPUT_HELP} (wrap one image in a list)",
            images.get_type().name()?
        )));
    }
    let items: Vec<Bound<'_, PyAny>> = match images.try_iter() {
        Ok(it) => it.collect::<PyResult<_>>()?,
        Err(_) => {
            return Err(invalid(format!(
                "images: got a {}; {INPUT_HELP}",
                images.get_type().name()?
            )))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, o)| one_source(o, i, true))
        .collect()
}

fn decode_all(srcs: Vec<Source>) -> bridgeface::Result<Vec<Rgb8>> {
    if srcs.is_empty() {
        return Err(Error::EmptyInput(
            "no images given; pass one or more images".into(),
        ));
    }
    srcs.into_iter().map(Source::decode).collect()
}

fn to_numpy<'py>(py: Python<'py>, t: Tensor) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (n, d) = (t.shape()[0], t.shape()[1]);
    let a = Array2::from_shape_vec((n, d), t.into_data())
        .map_err(|e| invalid(format!("embedding shape: {e}")))?;
    Ok(a.into_pyarray(py))
}

fn check_threads(threads: Option<usize>) -> PyResult<usize> {
    match threads {
        Some(0) => Err(invalid("threads must be at least 1".into())),
        Some(t) => Ok(t),
        None => Ok(bridgeface::model::student::default_threads()),
    }
}

fn check_device(device: &str) -> PyResult<()> {
    if device == "cpu" {
        Ok(())
    } else {
        Err(py_err(Error::Cuda(format!(
            "device `{device}`: this build of the Python package runs on the CPU only; use device=\"cpu\" (the `bridge` CLI built with --features cuda runs the GPU)"
        ))))
    }
}

/// An ONNX file is imported on the fly; anything else is read as an imported graph file.
fn load_graph(path: &Path) -> bridgeface::Result<Graph> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        bridgeface::onnx::import_file(path)
    } else {
        Graph::load(path)
    }
}

fn load_detector(path: Option<PathBuf>) -> bridgeface::Result<Detector> {
    let path = match path {
        Some(p) => p,
        None => bridgeface::assets::yunet_onnx()?,
    };
    Detector::from_graph(load_graph(&path)?)
}

fn tag_dict<'py>(py: Python<'py>, tag: &ModelTag) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", &tag.kind)?;
    d.set_item("weights_sha256", &tag.weights_sha256)?;
    d.set_item("resolution", tag.resolution)?;
    Ok(d)
}

/// The student weights: `weights`, else `$BRIDGE_WEIGHTS`, else `weights/student.safetensors`
/// in the current folder, else the one in the source tree the package was built from.
fn student_weights(weights: Option<PathBuf>) -> PyResult<PathBuf> {
    bridgeface::cli::default_weights(weights).map_err(|_| {
        py_err(Error::MissingAsset(
            "no student weights: pass Model(weights=PATH), or set BRIDGE_WEIGHTS, or run from a \
             bridgeface clone holding weights/student.safetensors (the wheel bundles no weights)"
                .into(),
        ))
    })
}

/// The BridgeNet student on bridgeface's CPU kernels.
#[pyclass(frozen, module = "bridgeface._native")]
struct Model {
    net: StudentNet,
    threads: usize,
    weights: PathBuf,
    tag: ModelTag,
    detector: OnceLock<Detector>,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (weights=None, device="cpu", threads=None))]
    fn new(
        py: Python<'_>,
        weights: Option<PathBuf>,
        device: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        check_device(device)?;
        let threads = check_threads(threads)?;
        let path = student_weights(weights)?;
        py.detach(|| {
            let net = StudentNet::load(&path)?;
            let info = StudentInfo::from_weights(&WeightFile::open(&path)?)?;
            let tag = ModelTag::of_file("student", &path, info.resolution)?;
            Ok(Model {
                net,
                threads,
                weights: path,
                tag,
                detector: OnceLock::new(),
            })
        })
        .map_err(py_err)
    }

    /// Embeddings of `images` (uint8 N×H×W×3, or a list of paths or encoded bytes), each resized
    /// to the model's input by area averaging as `bridge embed` does: float32 N×128, L2-normalised.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let srcs = sources(images)?;
        let t = py
            .detach(|| {
                let imgs = decode_all(srcs)?;
                embed::embed_rgb_threads(&self.net, cpu::kernels()?, &imgs, self.threads)
            })
            .map_err(py_err)?;
        to_numpy(py, t)
    }

    /// (cosine similarity, same person) of two images (paths, bytes or H×W×3 uint8 arrays);
    /// `threshold` defaults to the model's own.
    #[pyo3(signature = (a, b, threshold=None))]
    fn verify(
        &self,
        py: Python<'_>,
        a: &Bound<'_, PyAny>,
        b: &Bound<'_, PyAny>,
        threshold: Option<f32>,
    ) -> PyResult<(f32, bool)> {
        let srcs = vec![one_source(a, 0, true)?, one_source(b, 1, true)?];
        let t = threshold.unwrap_or(self.net.info.threshold);
        py.detach(|| {
            let imgs = decode_all(srcs)?;
            let e = embed::embed_rgb_threads(&self.net, cpu::kernels()?, &imgs, self.threads)?;
            let cos = bridgeface::ops::cosine(e.row(0), e.row(1))?;
            Ok((cos, cos >= t))
        })
        .map_err(py_err)
    }

    /// Every face YuNet finds in `image` (a path, bytes or H×W×3 uint8 array), best first, each
    /// as (chip: uint8 size×size×3 aligned on the ArcFace template, box (x, y, w, h), score).
    /// `detector` defaults to the fetched YuNet (`bridge fetch`), loaded once per Model.
    #[pyo3(signature = (image, size=112, score=0.5, detector=None))]
    fn detect_and_align<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        size: usize,
        score: f32,
        detector: Option<PathBuf>,
    ) -> PyResult<Bound<'py, PyList>> {
        if size < 8 {
            return Err(invalid(format!(
                "size {size}: chips must be at least 8 pixels"
            )));
        }
        let src = one_source(image, 0, true)?;
        let faces = py
            .detach(|| {
                let det = match self.detector.get() {
                    Some(d) => d,
                    None => {
                        let d = load_detector(detector)?;
                        self.detector.get_or_init(|| d)
                    }
                };
                let img = src.decode()?;
                let k = cpu::kernels()?;
                embed::detect_faces(det, k, &img, score)?
                    .into_iter()
                    .map(|d| {
                        let lm = d.landmarks.map(|p| [p[0] as f64, p[1] as f64]);
                        let chip = bridgeface::data::align::align_face(&img, &lm, size)?;
                        Ok((chip, d))
                    })
                    .collect::<bridgeface::Result<Vec<_>>>()
            })
            .map_err(py_err)?;
        let out = PyList::empty(py);
        for (chip, d) in faces {
            let a = Array3::from_shape_vec((chip.height, chip.width, 3), chip.pixels)
                .map_err(|e| invalid(format!("chip shape: {e}")))?;
            let arr: Bound<'py, PyArray3<u8>> = a.into_pyarray(py);
            let bbox = PyTuple::new(py, d.bbox)?;
            out.append((arr, bbox, d.score))?;
        }
        Ok(out)
    }

    /// The model's input side in pixels.
    #[getter]
    fn resolution(&self) -> usize {
        self.net.resolution()
    }

    /// The cosine threshold for "same person" stored with the weights.
    #[getter]
    fn threshold(&self) -> f32 {
        self.net.info.threshold
    }

    /// The weight file this model was loaded from.
    #[getter]
    fn weights(&self) -> String {
        self.weights.display().to_string()
    }

    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// {kind, weights_sha256, resolution}: what a gallery records of the model that filled it.
    #[getter]
    fn tag<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tag_dict(py, &self.tag)
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(weights={:?}, resolution={}, threads={})",
            self.weights.display().to_string(),
            self.net.resolution(),
            self.threads
        )
    }
}

/// The SFace teacher (112×112) on bridgeface's CPU kernels.
#[pyclass(frozen, module = "bridgeface._native")]
struct Teacher {
    net: TeacherNet,
    tag: ModelTag,
}

#[pymethods]
impl Teacher {
    /// `weights`: an SFace .onnx or an imported .safetensors graph (default: the fetched SFace).
    #[new]
    #[pyo3(signature = (weights=None))]
    fn new(py: Python<'_>, weights: Option<PathBuf>) -> PyResult<Self> {
        py.detach(|| {
            let path = match weights {
                Some(p) => p,
                None => bridgeface::assets::sface_onnx()?,
            };
            let net = TeacherNet::from_graph(load_graph(&path)?)?;
            let tag = ModelTag::of_file("teacher", &path, TEACHER_RESOLUTION)?;
            Ok(Teacher { net, tag })
        })
        .map_err(py_err)
    }

    /// Embeddings of `images` (as `Model.embed`), each resized to 112×112: float32 N×128.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let srcs = sources(images)?;
        let t = py
            .detach(|| {
                let imgs = decode_all(srcs)?;
                embed::embed_rgb_teacher(&self.net, cpu::kernels()?, &imgs)
            })
            .map_err(py_err)?;
        to_numpy(py, t)
    }

    /// (cosine similarity, same person); `threshold` defaults to SFace's 0.363.
    #[pyo3(signature = (a, b, threshold=None))]
    fn verify(
        &self,
        py: Python<'_>,
        a: &Bound<'_, PyAny>,
        b: &Bound<'_, PyAny>,
        threshold: Option<f32>,
    ) -> PyResult<(f32, bool)> {
        let srcs = vec![one_source(a, 0, true)?, one_source(b, 1, true)?];
        let t = threshold.unwrap_or(TEACHER_THRESHOLD);
        py.detach(|| {
            let imgs = decode_all(srcs)?;
            let e = embed::embed_rgb_teacher(&self.net, cpu::kernels()?, &imgs)?;
            let cos = bridgeface::ops::cosine(e.row(0), e.row(1))?;
            Ok((cos, cos >= t))
        })
        .map_err(py_err)
    }

    #[getter]
    fn tag<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tag_dict(py, &self.tag)
    }
}

/// A persistent, searchable gallery (usearch HNSW, cosine, f16 storage) with labels and paths.
#[pyclass(frozen, module = "bridgeface._native")]
struct Gallery {
    inner: Mutex<gallery::Gallery>,
}

impl Gallery {
    /// Runs `f` on the gallery with the GIL released. The lock is taken only after the GIL is
    /// released: a thread waiting for it while holding the GIL would deadlock with the holder,
    /// which needs the GIL back when it returns.
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut gallery::Gallery) -> bridgeface::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let mut g = self.inner.lock().map_err(|_| {
                Error::InvalidArgument("the gallery's lock is poisoned by an earlier panic".into())
            })?;
            f(&mut g)
        })
        .map_err(py_err)
    }
}

fn model_tag_of(model: Option<&Bound<'_, PyAny>>) -> PyResult<ModelTag> {
    match model {
        None => Ok(ModelTag::external()),
        Some(m) => {
            if let Ok(m) = m.cast::<Model>() {
                Ok(m.get().tag.clone())
            } else if let Ok(t) = m.cast::<Teacher>() {
                Ok(t.get().tag.clone())
            } else {
                Err(invalid(format!(
                    "model: got a {}; pass a bridgeface.Model, a bridgeface.Teacher or None",
                    m.get_type().name()?
                )))
            }
        }
    }
}

#[pymethods]
impl Gallery {
    /// An empty gallery of `dimensions`-D vectors; `model` (a Model or Teacher) is recorded so
    /// that probes can be checked against it.
    #[new]
    #[pyo3(signature = (dimensions=128, model=None, connectivity=None, expansion_add=None, expansion_search=None))]
    fn new(
        dimensions: usize,
        model: Option<&Bound<'_, PyAny>>,
        connectivity: Option<usize>,
        expansion_add: Option<usize>,
        expansion_search: Option<usize>,
    ) -> PyResult<Self> {
        let d = IndexSettings::default();
        let settings = IndexSettings {
            connectivity: connectivity.unwrap_or(d.connectivity),
            expansion_add: expansion_add.unwrap_or(d.expansion_add),
            expansion_search: expansion_search.unwrap_or(d.expansion_search),
        };
        let g =
            gallery::Gallery::new(dimensions, model_tag_of(model)?, settings).map_err(py_err)?;
        Ok(Gallery {
            inner: Mutex::new(g),
        })
    }

    /// Adds float32 embeddings N×D with one label each (or one label for all) and optional
    /// source paths.
    #[pyo3(signature = (embeddings, labels, paths=None, threads=None))]
    fn add(
        &self,
        py: Python<'_>,
        embeddings: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        paths: Option<Vec<String>>,
        threads: Option<usize>,
    ) -> PyResult<()> {
        let (rows, n, d) = matrix(embeddings)?;
        let labels: Vec<String> = if let Ok(one) = labels.extract::<String>() {
            vec![one; n]
        } else {
            labels.extract().map_err(|_| {
                invalid("labels: pass one string, or a list of one string per embedding".into())
            })?
        };
        if labels.len() != n {
            return Err(invalid(format!(
                "labels: {} labels for {n} embeddings",
                labels.len()
            )));
        }
        let paths = paths.unwrap_or_else(|| vec![String::new(); n]);
        let threads = check_threads(threads)?;
        self.with(py, |g| {
            if d != g.dimensions() {
                return Err(Error::Shape(format!(
                    "embeddings are {d}-D, the gallery holds {}-D vectors",
                    g.dimensions()
                )));
            }
            g.add(&rows, &labels, &paths, threads)
        })
    }

    /// The `k` nearest entries to each query (float32 D or N×D): for a single vector a list of
    /// (label, similarity, path), for a matrix a list of such lists; most similar first.
    #[pyo3(signature = (queries, k=5))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let single = queries
            .cast::<PyUntypedArray>()
            .map(|a| a.ndim() == 1)
            .unwrap_or(false);
        let (rows, n, d) = matrix(queries)?;
        let results = self.with(py, |g| {
            if d != g.dimensions() {
                return Err(Error::Shape(format!(
                    "queries are {d}-D, the gallery holds {}-D vectors",
                    g.dimensions()
                )));
            }
            (0..n)
                .map(|i| g.search(&rows[i * d..(i + 1) * d], k))
                .collect::<bridgeface::Result<Vec<_>>>()
        })?;
        let out = PyList::empty(py);
        for r in results {
            let one = PyList::empty(py);
            for m in r {
                one.append((m.label, m.similarity, m.path))?;
            }
            if single {
                return Ok(one);
            }
            out.append(one)?;
        }
        Ok(out)
    }

    /// A gallery of every image of the ImageFolder `folder` (FOLDER/IDENTITY/IMAGE; identity =
    /// sub-folder), embedded by `model` (a Model or Teacher) in batches of 256.
    #[staticmethod]
    #[pyo3(signature = (model, folder, threads=None))]
    fn build(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        folder: PathBuf,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let tag = model_tag_of(Some(model))?;
        let threads = check_threads(threads)?;
        let which = match (model.cast::<Model>(), model.cast::<Teacher>()) {
            (Ok(m), _) => Which::Student(m.get()),
            (_, Ok(t)) => Which::Teacher(t.get()),
            _ => {
                return Err(invalid(
                    "model: pass a bridgeface.Model or a bridgeface.Teacher".into(),
                ))
            }
        };
        let g = py
            .detach(|| {
                let set = bridgeface::data::folder::ImageFolder::open(&folder)?;
                let k = cpu::kernels()?;
                let mut g: Option<gallery::Gallery> = None;
                for chunk in set.samples.chunks(BUILD_BATCH) {
                    let imgs = chunk
                        .iter()
                        .map(|s| image::load_rgb8(&s.path))
                        .collect::<bridgeface::Result<Vec<_>>>()?;
                    let e = match which {
                        Which::Student(m) => embed::embed_rgb_threads(&m.net, k, &imgs, m.threads)?,
                        Which::Teacher(t) => embed::embed_rgb_teacher(&t.net, k, &imgs)?,
                    };
                    let d = e.shape()[1];
                    let gal = match g.as_mut() {
                        Some(gal) => gal,
                        None => g.insert(gallery::Gallery::new(
                            d,
                            tag.clone(),
                            IndexSettings::default(),
                        )?),
                    };
                    let labels: Vec<String> = chunk
                        .iter()
                        .map(|s| set.identities[s.label].clone())
                        .collect();
                    let paths: Vec<String> =
                        chunk.iter().map(|s| s.path.display().to_string()).collect();
                    gal.add(e.data(), &labels, &paths, threads)?;
                }
                g.ok_or_else(|| Error::EmptyInput(format!("{} holds no images", folder.display())))
            })
            .map_err(py_err)?;
        Ok(Gallery {
            inner: Mutex::new(g),
        })
    }

    /// Writes the gallery folder (index.usearch + gallery.json, each atomically).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.with(py, |g| g.save(&path))
    }

    /// Opens a gallery folder: loaded into memory, or with `view=True` memory-mapped (read-only).
    #[staticmethod]
    #[pyo3(signature = (path, view=false))]
    fn load(py: Python<'_>, path: PathBuf, view: bool) -> PyResult<Self> {
        let g = py
            .detach(|| {
                if view {
                    gallery::Gallery::view(&path)
                } else {
                    gallery::Gallery::load(&path)
                }
            })
            .map_err(py_err)?;
        Ok(Gallery {
            inner: Mutex::new(g),
        })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |g| Ok(g.len()))
    }

    #[getter]
    fn dimensions(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |g| Ok(g.dimensions()))
    }

    #[getter]
    fn labels(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |g| {
            Ok(g.entries().iter().map(|e| e.label.clone()).collect())
        })
    }

    #[getter]
    fn paths(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |g| {
            Ok(g.entries().iter().map(|e| e.path.clone()).collect())
        })
    }

    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let tag = self.with(py, |g| Ok(g.model().clone()))?;
        tag_dict(py, &tag)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |g| {
            Ok(format!(
                "Gallery({} faces, {}-D, model={}{})",
                g.len(),
                g.dimensions(),
                g.model().kind,
                if g.is_view() { ", view" } else { "" }
            ))
        })
    }
}

/// The network `Gallery.build` embeds with.
#[derive(Clone, Copy)]
enum Which<'a> {
    Student(&'a Model),
    Teacher(&'a Teacher),
}

/// A float32 vector (D) or matrix (N×D) into (row-major values, N, D).
fn matrix(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<f32>, usize, usize)> {
    let help = "pass a float32 NumPy array of shape (D,) or (N, D)";
    let arr = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| invalid(format!("embeddings: got a {}; {help}", type_name(obj))))?;
    if !arr.dtype().is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        return Err(invalid(format!(
            "embeddings: got a {} array; {help}",
            arr.dtype()
        )));
    }
    match arr.ndim() {
        1 => {
            let a: PyReadonlyArray1<f32> = arr.cast::<numpy::PyArray1<f32>>()?.readonly();
            let v: Vec<f32> = a.as_array().iter().copied().collect();
            let d = v.len();
            Ok((v, 1, d))
        }
        2 => {
            let a: PyReadonlyArray2<f32> = arr.cast::<numpy::PyArray2<f32>>()?.readonly();
            let view = a.as_array();
            let (n, d) = (view.shape()[0], view.shape()[1]);
            Ok((view.iter().copied().collect(), n, d))
        }
        k => Err(invalid(format!(
            "embeddings: got a {k}-D array of shape {:?}; {help}",
            arr.shape()
        ))),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BridgefaceError", m.py().get_type::<BridgefaceError>())?;
    m.add_class::<Model>()?;
    m.add_class::<Teacher>()?;
    m.add_class::<Gallery>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
