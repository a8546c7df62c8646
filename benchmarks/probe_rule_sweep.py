"""Sweep of GradProbe decision rules on SmolLM2-135M (the measurements behind hf_gradprobe/decision.py).

Ran on a lent H100 (fp32, same protocol as benchmarks/oneshot.py: 64 x 512 calibration windows of
WikiText-2 valid, seed 0; 32 x 1024 evaluation windows of WikiText-2 raw test). Modes:
``api`` runs prune_pretrained variants, ``rules`` collects g0/g1 once and scores candidate rules offline.
Results: benchmarks/results/probe_rule_sweep.{json,md}.

    python benchmarks/probe_rule_sweep.py rules
"""
import os, sys, time, json, copy, math, torch
import torch.nn.functional as F
import hf_gradprobe as hg
from transformers import AutoModelForCausalLM
from hf_gradprobe.models import dequantized_copy
from hf_gradprobe.layers import find_prunable_layers
from hf_gradprobe.strategies import ActivationNormCollector, strategy_scores
from hf_gradprobe.probing import GradientProbe, run_probe_batches, _LayerStatistic, gradient_growth
from hf_gradprobe.masking import select_mask, per_row_mask, nm_mask
from hf_gradprobe.decision import probe_masks, propose_candidates
OUT=os.environ.get('OUT','benchmarks/results'); dev='cuda' if torch.cuda.is_available() else 'cpu'
if os.path.exists('/tmp/g/model.gguf'):  # the GGUF carried to a GPU machine without the pip package
    ids=torch.load('.dev/ids.pt'); cal=ids['cal']; test=ids['test']
    q=AutoModelForCausalLM.from_pretrained('/tmp/g', gguf_file='model.gguf')
    base=dequantized_copy(q, torch.float32).to(dev); del q
else:
    base, tok = hg.load_model('smollm2-135m'); base=base.to(dev)
    cal=hg.calibration_windows(hg.tokenize_corpus(tok,'../shared/data/wikitext-2/valid.txt'),64,512,seed=0)
    test=hg.tokenize_corpus(tok,'../shared/data/wikitext-2-raw/wiki.test.raw')
layers0=find_prunable_layers(base); orig={l.name:l.weight.detach().clone() for l in layers0}
def reset(m):
    with torch.no_grad():
        for l in find_prunable_layers(m): l.weight.copy_(orig[l.name])
def ppl(m):
    r=hg.compute_perplexity(m,None,test,seq_len=1024,max_windows=32,progress=False); return r.perplexity
res=[]
def log(**k):
    res.append(k); print(json.dumps(k), flush=True)
    json.dump(res, open(f'{OUT}/probe_rule_sweep_run.json','w'), indent=1)
log(tag='dense', ppl=ppl(base))
mode=sys.argv[1] if len(sys.argv)>1 else 'all'
if mode in ('all','api'):
  for pattern in ['unstructured','2:4']:
    for kw in [dict(strategy='wanda', gradient_weight=0.3), dict(strategy='wanda', gradient_weight=1.0), dict(strategy='wanda', gradient_weight=1.0, gradient_threshold=0.5),
               dict(strategy='wanda', gradient_weight=3.0), dict(strategy='magnitude', gradient_weight=1.0),
               dict(strategy='wanda', gradient_weight=1.0, layerwise=True, num_probe_samples=4)]:
        reset(base); torch.cuda.synchronize(); t=time.time()
        m,rep=hg.prune_pretrained(base, hg.GradProbeConfig(pattern=pattern, **kw), calibration=cal, return_report=True, progress=False)
        torch.cuda.synchronize()
        log(tag=f"{pattern} {kw}", sparsity=rep.sparsity, ppl=ppl(m), secs=time.time()-t, restored=rep.restored, peak=rep.peak_memory_bytes)
if mode in ('all','rules'):
  reset(base); m=base
  for p in m.parameters(): p.requires_grad_(False)
  layers=find_prunable_layers(m)
  with torch.no_grad(), ActivationNormCollector(layers) as col:
    for i in range(0,64,8): m(input_ids=cal[i:i+8].to(dev), use_cache=False)
  S={l.name: strategy_scores('wanda',l,col.sq_norms) for l in layers}
  def loss_fn(b): 
    lg=m(input_ids=b, use_cache=False).logits; return F.cross_entropy(lg[0,:-1].float(), b[0,1:])
  class Both(GradientProbe):
    def commit_batch(self, loss_scale=1.0):
        for n,g in self._batch_grads.items(): self.mx[n].add(g)
        return super().commit_batch(loss_scale)
  def grads(shrink,P):
    pr=Both(layers, shrink, 0.1, 'sum', torch.float32); pr.mx={l.name:_LayerStatistic('max_abs',torch.float32) for l in layers}
    with pr: run_probe_batches(pr, [cal[i:i+1].to(dev) for i in range(P)], loss_fn)
    return pr.results(), {n:s.result() for n,s in pr.mx.items()}
  for pattern in ['unstructured','2:4']:
   for ratio in [1.25]:
    P=64
    C=dict(zip([l.name for l in layers], propose_candidates([S[l.name] for l in layers],0.5,'per_row',pattern,ratio)))
    g0s,g0m=grads(None,P); g1s,g1m=grads(C,P)
    def evmask(masks,tag):
        with torch.no_grad():
            for l in layers: l.weight.copy_(orig[l.name]); l.weight.masked_fill_(masks[l.name],0)
        sp=sum(int(masks[l.name].sum()) for l in layers)/sum(l.weight.numel() for l in layers)
        log(tag=f'rule {pattern} r{ratio} {tag}', sparsity=sp, ppl=ppl(m))
    def sel(key):
        return nm_mask(key,2,4) if pattern=='2:4' else per_row_mask(key,0.5)
    rules={}
    rules['wanda']={n: sel(S[n]) for n in S}
    W={l.name: l.weight.detach().float() for l in layers}
    def keyed(f): return {n: sel(torch.where(C[n], f(n), torch.inf)) for n in S}
    for gam in [-0.1,-0.25,-0.5,-1.0]:
        rules[f'soft_{gam}']=keyed(lambda n: S[n]*(g1m[n]/(g0m[n]+1e-30)).clamp(0.1,10)**gam)
        rules[f'softsum_{gam}']=keyed(lambda n: S[n]*(g1s[n].abs()/(g0s[n].abs()+1e-30)).clamp(0.1,10)**gam)
    for tau in [0.0, 1.0]:
        def inv(n, tau=tau):
            grown = gradient_growth(g0m[n], g1m[n]) > tau
            return torch.where(grown, S[n], S[n] + 2*S[n].max() + 1)
        rules[f'gated_inv_{tau}']=keyed(inv)
    for beta in [0.1,0.3,1.0]:
        def gb(n, beta=beta):
            a=S[n]; b=W[n].abs()*g0m[n]
            return a/a.mean() + beta*b/b.mean()
        rules[f'gblm_max_{beta}']=keyed(gb)
        def gb1(n, beta=beta):
            a=S[n]; b=W[n].abs()*g1m[n]
            return a/a.mean() + beta*b/b.mean()
        rules[f'gblm1_max_{beta}']=keyed(gb1)
    for name,mk in rules.items(): evmask(mk,name)
