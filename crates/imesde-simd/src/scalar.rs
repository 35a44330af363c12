//! Portable kernels. Written so that LLVM can vectorise them for the baseline target (SSE2 on
//! x86-64): independent partial sums instead of one serial accumulator.

const LANES: usize = 8;

pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, ta) = a.as_chunks::<LANES>();
    let (cb, tb) = b.as_chunks::<LANES>();
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ta.iter().zip(tb) {
        tail = x.mul_add(*y, tail);
    }
    acc.iter().sum::<f32>() + tail
}

pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

fn dot_i16_i8(q: &[i16], x: &[i8]) -> i32 {
    q.iter()
        .zip(x)
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum()
}

pub(crate) fn scan_f32(q: &[f32], rows: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len())) {
        *o = dot_f32(q, row);
    }
}

pub(crate) fn scan_multi_f32(qs: &[f32], nq: usize, rows: &[f32], out: &mut [f32]) {
    let dim = qs.len() / nq;
    let n = out.len() / nq;
    for (q, o) in qs.chunks_exact(dim).zip(out.chunks_exact_mut(n)) {
        scan_f32(q, rows, o);
    }
}

pub(crate) fn scan_i8(q: &[i16], rows: &[i8], out: &mut [i32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len())) {
        *o = dot_i16_i8(q, row);
    }
}

pub(crate) fn scan_multi_i8(qs: &[i16], nq: usize, rows: &[i8], out: &mut [i32]) {
    let dim = qs.len() / nq;
    let n = out.len() / nq;
    for (q, o) in qs.chunks_exact(dim).zip(out.chunks_exact_mut(n)) {
        scan_i8(q, rows, o);
    }
}
