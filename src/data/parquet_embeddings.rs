//! Reads a table of face embeddings from Parquet, as `bridgeface.ray`'s pipeline writes it
//! (`map_batches(Embedder)` then `write_parquet`): vectors, labels, source paths, and the model
//! that made them. It must not build indexes or embed images: `cli::gallery` hands the rows on.
//!
//! Columns read (others are ignored):
//! - `embedding`: a list of floats (f32 or f64) per row, every row of one length; Ray's tensor
//!   column (`ArrowTensorTypeV2`) is stored in Parquet as exactly such a list;
//! - `label`: a string per row, the identity;
//! - `path`: a string per row, where the face came from (optional; empty when absent or null);
//! - `model`: optional, the JSON model tag (`kind`, `weights_sha256`, `resolution`) that
//!   `bridgeface.ray.Embedder` writes on every row; every row must hold the same one.

use crate::error::{Error, Result};
use parquet::basic::{Repetition, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use parquet::schema::types::Type;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const EMBEDDING_COLUMN: &str = "embedding";
pub const LABEL_COLUMN: &str = "label";
pub const PATH_COLUMN: &str = "path";
pub const MODEL_COLUMN: &str = "model";

/// The rows of one or more Parquet files, in file-name order, then row order.
#[derive(Debug, Default)]
pub struct EmbeddingTable {
    /// Length of every vector.
    pub dimensions: usize,
    /// Row-major, `labels.len()` rows of `dimensions`.
    pub vectors: Vec<f32>,
    pub labels: Vec<String>,
    pub paths: Vec<String>,
    /// The `model` column's value (one for the whole table), if the files have that column.
    pub model: Option<String>,
    /// The Parquet files read.
    pub files: Vec<PathBuf>,
}

/// The `.parquet` files of `path`: the file itself, or a folder's files sorted by name (Ray
/// names them by block, so this is the dataset's order).
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let p = entry.map_err(|e| Error::io(path, e))?.path();
        if p.is_file() && p.extension().is_some_and(|e| e == "parquet") {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(Error::EmptyInput(format!(
            "{} holds no .parquet files; pass the folder that write_parquet wrote",
            path.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// Reads every row of the `.parquet` file `path`, or of the `.parquet` files in the folder
/// `path`. Fails on a file that is not Parquet, a missing `embedding` or `label` column, a null
/// vector or label, vectors of different lengths, non-finite values, or no rows at all.
pub fn read_embeddings(path: &Path) -> Result<EmbeddingTable> {
    let mut table = EmbeddingTable::default();
    for file in parquet_files(path)? {
        read_file(&file, &mut table)?;
        table.files.push(file);
    }
    if table.labels.is_empty() {
        return Err(Error::EmptyInput(format!(
            "the Parquet files under {} hold no rows",
            path.display()
        )));
    }
    Ok(table)
}

fn parquet_error(file: &Path, e: parquet::errors::ParquetError) -> Error {
    let msg = e.to_string().replace('\n', " ");
    Error::InvalidArgument(format!(
        "{} could not be read as Parquet ({msg}); pass the files that write_parquet wrote (snappy, gzip or uncompressed)",
        file.display()
    ))
}

fn read_file(file: &Path, table: &mut EmbeddingTable) -> Result<()> {
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let reader = SerializedFileReader::new(f).map_err(|e| parquet_error(file, e))?;
    let schema = reader.metadata().file_metadata().schema();
    let names: Vec<&str> = schema.get_fields().iter().map(|t| t.name()).collect();
    for need in [EMBEDDING_COLUMN, LABEL_COLUMN] {
        if !names.contains(&need) {
            return Err(Error::InvalidArgument(format!(
                "{} has no `{need}` column (columns: {}); write it with bridgeface.ray.Embedder, or name the columns embedding and label",
                file.display(),
                names.join(", ")
            )));
        }
    }
    for t in schema.get_fields() {
        check_column_type(file, t)?;
    }
    // Read only the columns used: the row API decodes every projected column.
    let wanted = [EMBEDDING_COLUMN, LABEL_COLUMN, PATH_COLUMN, MODEL_COLUMN];
    let fields: Vec<Arc<Type>> = schema
        .get_fields()
        .iter()
        .filter(|t| wanted.contains(&t.name()))
        .cloned()
        .collect();
    let projection = Type::group_type_builder(schema.name())
        .with_fields(fields)
        .build()
        .map_err(|e| parquet_error(file, e))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| parquet_error(file, e))?;
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| parquet_error(file, e))?;
        read_row(file, i, &row, table)?;
    }
    Ok(())
}

/// Refuses a used column of another shape before the row reader sees it (its group readers
/// assume well-formed nesting): `embedding` must be a list of f32/f64 (Parquet's 3-level LIST, as
/// pyarrow writes it, or the 2-level legacy form), the others single strings.
fn check_column_type(file: &Path, t: &Type) -> Result<()> {
    // `repetition()` asserts that the file gave one; a hostile file may not.
    let repeated = |t: &Type| {
        let info = t.get_basic_info();
        info.has_repetition() && info.repetition() == Repetition::REPEATED
    };
    let is_float = |t: &Type| {
        t.is_primitive()
            && matches!(
                t.get_physical_type(),
                PhysicalType::FLOAT | PhysicalType::DOUBLE
            )
    };
    let ok = match t.name() {
        EMBEDDING_COLUMN => {
            t.is_group()
                && !repeated(t)
                && match t.get_fields() {
                    [item] => {
                        repeated(item)
                            && (is_float(item)
                                || (item.is_group()
                                    && matches!(item.get_fields(), [e] if is_float(e)
                                        && !repeated(e))))
                    }
                    _ => false,
                }
        }
        LABEL_COLUMN | PATH_COLUMN | MODEL_COLUMN => {
            t.is_primitive() && t.get_physical_type() == PhysicalType::BYTE_ARRAY && !repeated(t)
        }
        _ => return Ok(()),
    };
    if ok {
        return Ok(());
    }
    let want = if t.name() == EMBEDDING_COLUMN {
        "a list of float or double"
    } else {
        "a string"
    };
    Err(Error::InvalidArgument(format!(
        "{}: column `{}` is not {want}; write vectors as a list<float32> column and labels as strings",
        file.display(),
        t.name()
    )))
}

fn read_row(file: &Path, i: usize, row: &Row, table: &mut EmbeddingTable) -> Result<()> {
    let at = || format!("{} row {i}", file.display());
    let (mut vector, mut label, mut path, mut model) = (None, None, String::new(), None);
    for (name, field) in row.get_column_iter() {
        match name.as_str() {
            EMBEDDING_COLUMN => vector = Some(floats(field).map_err(|e| bad(&at(), name, &e))?),
            LABEL_COLUMN => label = text(field).map_err(|e| bad(&at(), name, &e))?,
            PATH_COLUMN => {
                path = text(field)
                    .map_err(|e| bad(&at(), name, &e))?
                    .unwrap_or_default()
            }
            MODEL_COLUMN => model = text(field).map_err(|e| bad(&at(), name, &e))?,
            _ => {}
        }
    }
    let vector = vector.unwrap_or_default();
    let label = label.ok_or_else(|| {
        Error::InvalidArgument(format!("{}: the label is null; every row needs one", at()))
    })?;
    if vector.is_empty() {
        return Err(Error::Shape(format!(
            "{}: the embedding is null or empty; every row needs a vector",
            at()
        )));
    }
    if table.labels.is_empty() {
        table.dimensions = vector.len();
    } else if vector.len() != table.dimensions {
        return Err(Error::Shape(format!(
            "{}: the embedding has {} values, the rows before it {}; every vector must have one length",
            at(),
            vector.len(),
            table.dimensions
        )));
    }
    if vector.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "{}: the embedding holds a non-finite value",
            at()
        )));
    }
    if table.labels.is_empty() {
        table.model = model;
    } else if model != table.model {
        return Err(Error::InvalidArgument(format!(
            "{}: the `model` column changes from {} to {}; build one gallery per model",
            at(),
            table.model.as_deref().unwrap_or("null"),
            model.as_deref().unwrap_or("null")
        )));
    }
    table.vectors.extend_from_slice(&vector);
    table.labels.push(label);
    table.paths.push(path);
    Ok(())
}

fn bad(at: &str, column: &str, what: &str) -> Error {
    Error::InvalidArgument(format!("{at}: column `{column}` {what}"))
}

/// A list of numbers as f32 (f64 is narrowed: the gallery stores f16).
fn floats(field: &Field) -> std::result::Result<Vec<f32>, String> {
    let list = match field {
        Field::ListInternal(list) => list,
        Field::Null => return Ok(Vec::new()),
        other => return Err(format!("holds {}, not a list of floats", kind(other))),
    };
    list.elements()
        .iter()
        .map(|v| match v {
            Field::Float(x) => Ok(*x),
            Field::Double(x) => Ok(*x as f32),
            Field::Float16(x) => Ok(x.to_f32()),
            other => Err(format!("holds {} in its list, not a float", kind(other))),
        })
        .collect()
}

/// A string, or None for a null.
fn text(field: &Field) -> std::result::Result<Option<String>, String> {
    match field {
        Field::Str(s) => Ok(Some(s.clone())),
        Field::Bytes(b) => String::from_utf8(b.data().to_vec())
            .map(Some)
            .map_err(|_| "holds bytes that are not UTF-8, not a string".to_string()),
        Field::Null => Ok(None),
        other => Err(format!("holds {}, not a string", kind(other))),
    }
}

/// What a value is, in a few words (a whole row's Debug text would not fit on one line).
fn kind(field: &Field) -> &'static str {
    match field {
        Field::Null => "null",
        Field::Str(_) => "a string",
        Field::Bytes(_) => "bytes",
        Field::Float16(_) | Field::Float(_) | Field::Double(_) => "a float",
        Field::ListInternal(_) => "a list",
        Field::Group(_) => "a struct",
        Field::MapInternal(_) => "a map",
        _ => "a number, date or time",
    }
}
