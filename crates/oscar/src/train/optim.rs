//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay `p ← p·(1 − lr·wd)`, bias-corrected
//! moments, `eps` added to the corrected root), with BERT's parameter groups (no decay on biases
//! and LayerNorm weights), frozen parameters, and global gradient-norm clipping as
//! `clip_grad_norm_`. Each parameter is updated in place over its own storage (one candle
//! in-place op per parameter, moments kept as plain vectors), not through a dozen temporary
//! tensors per parameter.

use crate::error::{Error, Result};
use crate::nn::Params;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Layout, Tensor};
use std::cell::RefCell;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// BERT's rule: no weight decay on `bias` and `LayerNorm.weight` (oscar-spec §3).
pub fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("LayerNorm.weight"))
}

struct Slot {
    name: String,
    m: Vec<f32>,
    v: Vec<f32>,
    /// The moments as tensors beside a parameter that is not an f32 CPU tensor (a GPU's): the
    /// update then runs as tensor ops there. Created from `m`/`v` on first use.
    on_device: Option<(Tensor, Tensor)>,
    decay: bool,
    frozen: bool,
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Optimizer steps taken (torch's `state['step']`).
    pub step: u64,
}

/// Pointers to disjoint parts of which worker threads write (see [`Update`]).
struct Shared([*mut f32; 3]);
unsafe impl Sync for Shared {}

/// One in-place AdamW update of a parameter's storage.
struct Update<'a> {
    grad: &'a [f32],
    scale: f32,
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    lr: f64,
    wd: f64,
    cfg: AdamWConfig,
    step: u64,
}

impl candle_core::InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("AdamW updates f32 parameters only")
        };
        if !layout.is_contiguous() {
            candle_core::bail!("AdamW needs contiguous parameters");
        }
        let p = &mut data[layout.start_offset()..layout.start_offset() + self.grad.len()];
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        let step_size = (self.lr / bc1) as f32;
        let (b1f, b2f, eps) = (b1 as f32, b2 as f32, self.cfg.eps as f32);
        let decay = (1.0 - self.lr * self.wd) as f32;
        let bc2s = bc2_sqrt as f32;
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        let (grad, scale) = (self.grad, self.scale);
        let update = |p: &mut [f32], m: &mut [f32], v: &mut [f32], offset: usize| {
            for i in 0..p.len() {
                let g = grad[offset + i] * scale;
                p[i] *= decay;
                // torch: exp_avg.lerp_(grad, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(grad, grad, 1 − β2)
                m[i] += (g - m[i]) * (1.0 - b1f);
                v[i] = v[i] * b2f + (1.0 - b2f) * g * g;
                let denom = v[i].sqrt() / bc2s + eps;
                p[i] -= step_size * m[i] / denom;
            }
        };
        // Large tensors are split over candle's worker pool (the update is memory-bound and was
        // a tenth of an Oscar-B step on one thread); element i is always computed the same way.
        const CHUNK: usize = 1 << 14;
        if p.len() < 2 * CHUNK {
            update(p, &mut m, &mut v, 0);
        } else {
            let n = p.len();
            let ptrs = Shared([p.as_mut_ptr(), m.as_mut_ptr(), v.as_mut_ptr()]);
            candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(CHUNK), |chunks| {
                let ptrs = &ptrs;
                let (a, b) = (chunks.start * CHUNK, (chunks.end * CHUNK).min(n));
                // SAFETY: chunk ranges are disjoint and the slices outlive the blocking call.
                let [pp, mp, vp] = ptrs
                    .0
                    .map(|q| unsafe { std::slice::from_raw_parts_mut(q.add(a), b - a) });
                update(pp, mp, vp, a);
            });
        }
        Ok(())
    }
}

impl AdamW {
    /// An optimizer over `params`; names matching `frozen` (prefixes) are never updated.
    pub fn new(params: &Params, cfg: AdamWConfig, frozen: &[&str]) -> Self {
        let slots = params
            .entries
            .iter()
            .map(|(name, var)| Slot {
                name: name.clone(),
                m: vec![0.0; var.elem_count()],
                v: vec![0.0; var.elem_count()],
                on_device: None,
                decay: decays(name),
                frozen: frozen.iter().any(|f| name.starts_with(f)),
            })
            .collect();
        AdamW {
            cfg,
            slots,
            step: 0,
        }
    }

    /// The global L2 norm of the (trainable) gradients, as `clip_grad_norm_` computes it.
    pub fn grad_norm(&self, params: &Params, grads: &GradStore) -> Result<f64> {
        let mut sq = 0.0f64;
        for ((_, var), slot) in params.entries.iter().zip(&self.slots) {
            if slot.frozen {
                continue;
            }
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sq.sqrt())
    }

    /// One step at learning rate `lr`: clips the gradients to `max_grad_norm` (when positive)
    /// and updates every trainable parameter in place. Returns the gradient norm before clipping.
    pub fn step(
        &mut self,
        params: &Params,
        grads: &GradStore,
        lr: f64,
        max_grad_norm: f64,
    ) -> Result<f64> {
        let norm = self.grad_norm(params, grads)?;
        if !norm.is_finite() {
            return Err(Error::Invalid(format!(
                "gradient norm is {norm}: the loss diverged"
            )));
        }
        // clip_grad_norm_: coef = max / (norm + 1e-6), applied when below 1.
        let scale = if max_grad_norm > 0.0 {
            (max_grad_norm / (norm + 1e-6)).min(1.0) as f32
        } else {
            1.0
        };
        self.step += 1;
        for ((name, var), slot) in params.entries.iter().zip(self.slots.iter_mut()) {
            debug_assert_eq!(name, &slot.name);
            if slot.frozen {
                continue;
            }
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let wd = if slot.decay {
                self.cfg.weight_decay
            } else {
                0.0
            };
            if !crate::nn::fused::fused_path(&[var.as_tensor()]) {
                step_on_device(self.cfg, self.step, slot, var, g, scale, lr, wd)?;
                continue;
            }
            let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
            let op = Update {
                grad: &g,
                scale,
                m: RefCell::new(&mut slot.m),
                v: RefCell::new(&mut slot.v),
                lr,
                wd,
                cfg: self.cfg,
                step: self.step,
            };
            var.as_tensor().inplace_op1(&op)?;
        }
        Ok(norm)
    }

    /// Moments as tensors (`{name}.exp_avg`, `{name}.exp_avg_sq`) for checkpoints, in host memory.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let dev = candle_core::Device::Cpu;
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            if let Some((m, v)) = &s.on_device {
                out.push((
                    format!("{}.exp_avg", s.name),
                    m.flatten_all()?.to_device(&dev)?,
                ));
                out.push((
                    format!("{}.exp_avg_sq", s.name),
                    v.flatten_all()?.to_device(&dev)?,
                ));
                continue;
            }
            out.push((
                format!("{}.exp_avg", s.name),
                Tensor::from_slice(&s.m, s.m.len(), &dev)?,
            ));
            out.push((
                format!("{}.exp_avg_sq", s.name),
                Tensor::from_slice(&s.v, s.v.len(), &dev)?,
            ));
        }
        Ok(out)
    }

    /// Which parameters (in the order of the `Params` it was built for) it updates.
    pub fn trainable(&self) -> Vec<bool> {
        self.slots.iter().map(|s| !s.frozen).collect()
    }

    /// Rank 0's moments and step count on every rank (a resumed data-parallel run: rank 0 read
    /// the checkpoint).
    pub fn broadcast_from_rank0(
        &mut self,
        comm: &dyn crate::train::collective::Collective,
        step: u64,
    ) -> Result<()> {
        for s in &mut self.slots {
            if let Some((m, v)) = s.on_device.take() {
                s.m = m.flatten_all()?.to_vec1()?;
                s.v = v.flatten_all()?.to_vec1()?;
            }
            comm.broadcast_f32(&mut s.m)?;
            comm.broadcast_f32(&mut s.v)?;
        }
        self.step = step;
        Ok(())
    }

    /// Restores moments saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        for s in &mut self.slots {
            for (suffix, buf) in [("exp_avg", &mut s.m), ("exp_avg_sq", &mut s.v)] {
                let key = format!("{}.{suffix}", s.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| Error::Invalid(format!("optimizer state lacks {key}")))?;
                let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
                if v.len() != buf.len() {
                    return Err(Error::Invalid(format!(
                        "optimizer state {key} has {} values, the parameter {}",
                        v.len(),
                        buf.len()
                    )));
                }
                *buf = v;
            }
            s.on_device = None;
        }
        self.step = step;
        Ok(())
    }
}

/// The same update as the CPU kernel, as tensor ops on the parameter's own device (what a GPU
/// runs): `p ← p·(1 − lr·wd) − lr/bc1 · m / (√v/√bc2 + eps)` after the moment updates.
#[allow(clippy::too_many_arguments)]
fn step_on_device(
    cfg: AdamWConfig,
    step: u64,
    slot: &mut Slot,
    var: &candle_core::Var,
    g: &Tensor,
    scale: f32,
    lr: f64,
    wd: f64,
) -> Result<()> {
    let p = var.as_tensor();
    let (m, v) = match slot.on_device.take() {
        Some(mv) => mv,
        None => (
            Tensor::from_slice(&slot.m, p.shape(), p.device())?,
            Tensor::from_slice(&slot.v, p.shape(), p.device())?,
        ),
    };
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    let bc1 = 1.0 - b1.powi(step as i32);
    let bc2_sqrt = (1.0 - b2.powi(step as i32)).sqrt();
    let g = (g.detach() * scale as f64)?;
    let m = ((m * b1)? + (&g * (1.0 - b1))?)?;
    let v = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
    let denom = ((v.sqrt()? / bc2_sqrt)? + cfg.eps)?;
    let updated = ((p.detach() * (1.0 - lr * wd))? - ((&m / denom)? * (lr / bc1))?)?;
    var.set(&updated)?;
    slot.on_device = Some((m, v));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use candle_core::{Device, Tensor, Var};

    /// The update split over worker threads (a large tensor) computes each element exactly as the
    /// single-threaded one (a small tensor): a periodic large parameter stays equal to the small one.
    #[test]
    fn threaded_update_equals_the_single_threaded_one() {
        let period = 1000;
        let big = 100_003;
        let val = |i: usize| ((i % period) as f32 * 0.37).sin();
        let grad = |i: usize| ((i % period) as f32 * 0.11).cos() * 0.01;
        let small_p = Var::from_tensor(
            &Tensor::from_vec(
                (0..period).map(val).collect::<Vec<_>>(),
                period,
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let big_p = Var::from_tensor(
            &Tensor::from_vec((0..big).map(val).collect::<Vec<_>>(), big, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let params = Params {
            entries: vec![
                ("small.weight".into(), small_p.clone()),
                ("big.weight".into(), big_p.clone()),
            ],
        };
        let cfg = AdamWConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
        };
        let mut opt = AdamW::new(&params, cfg, &[]);
        let loss = (small_p
            .as_tensor()
            .mul(
                &Tensor::from_vec(
                    (0..period).map(grad).collect::<Vec<_>>(),
                    period,
                    &Device::Cpu,
                )
                .unwrap(),
            )
            .unwrap()
            .sum_all()
            .unwrap()
            + big_p
                .as_tensor()
                .mul(
                    &Tensor::from_vec((0..big).map(grad).collect::<Vec<_>>(), big, &Device::Cpu)
                        .unwrap(),
                )
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        for _ in 0..3 {
            let grads = loss.backward().unwrap();
            opt.step(&params, &grads, 1e-2, 0.0).unwrap();
        }
        let (s, b): (Vec<f32>, Vec<f32>) = (
            small_p.as_tensor().to_vec1().unwrap(),
            big_p.as_tensor().to_vec1().unwrap(),
        );
        assert!(
            s.iter().enumerate().any(|(i, v)| *v != val(i)),
            "parameters moved"
        );
        for (i, v) in b.iter().enumerate() {
            assert_eq!(v.to_bits(), s[i % period].to_bits(), "element {i}");
        }
    }

    /// The tensor-op update a GPU runs equals the CPU kernel's over several steps (clipping,
    /// weight decay, bias corrections), and its moments checkpoint and restore the same way.
    #[test]
    fn the_device_update_equals_the_cpu_kernel() {
        let n = 257;
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.31).sin()).collect();
        let make = || {
            let w = Var::from_tensor(&Tensor::from_vec(init.clone(), n, &Device::Cpu).unwrap())
                .unwrap();
            let b =
                Var::from_tensor(&Tensor::from_vec(init[..7].to_vec(), 7, &Device::Cpu).unwrap())
                    .unwrap();
            Params {
                entries: vec![("layer.weight".into(), w), ("layer.bias".into(), b)],
            }
        };
        let cfg = AdamWConfig {
            lr: 1e-2,
            weight_decay: 0.05,
            ..AdamWConfig::default()
        };
        let run = |p: &Params, opt: &mut AdamW| {
            for k in 0..4 {
                let w = p.entries[0].1.as_tensor();
                let b = p.entries[1].1.as_tensor();
                let loss = ((w.sqr().unwrap().sum_all().unwrap() * (0.5 + k as f64)).unwrap()
                    + b.sum_all().unwrap())
                .unwrap();
                opt.step(p, &loss.backward().unwrap(), 1e-2, 0.5).unwrap();
            }
        };
        let (pk, pd) = (make(), make());
        let (mut ok, mut od) = (AdamW::new(&pk, cfg, &[]), AdamW::new(&pd, cfg, &[]));
        run(&pk, &mut ok);
        crate::nn::fused::composite_only(|| run(&pd, &mut od));
        assert!(
            od.slots.iter().all(|s| s.on_device.is_some()),
            "the device path ran"
        );
        for ((_, a), (_, b)) in pk.entries.iter().zip(&pd.entries) {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                a.as_tensor().to_vec1().unwrap(),
                b.as_tensor().to_vec1().unwrap(),
            );
            let d = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(d < 1e-6, "parameters differ by {d}");
        }
        let (sk, sd) = (ok.state_tensors().unwrap(), od.state_tensors().unwrap());
        for ((ka, a), (kb, b)) in sk.iter().zip(&sd) {
            assert_eq!(ka, kb);
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-6, "{ka} differs by {d}");
        }
        // Restored moments replace the device ones.
        let map: std::collections::HashMap<String, Tensor> = sk.into_iter().collect();
        od.load_state(&map, 4).unwrap();
        assert!(od.slots.iter().all(|s| s.on_device.is_none()));
    }
}
