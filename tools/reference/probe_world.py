"""How hard is the synthetic world? Linear (and one-hidden-layer) probes of its region features.

Reads WORLD/scenes.json (the true objects) and WORLD/features/features.tsv, matches each object to
its region by the box dims, standardises the features on the training split, and reports held-out
accuracy for category, colour and size against the majority class.

    /work/ref/venv/bin/python tools/reference/probe_world.py WORLD      # needs numpy + torch

On the README's 2,000-image 64-d world: category 0.513, colour 0.862, size 0.999 (linear).
"""
import json, base64, sys, numpy as np, torch
w = sys.argv[1]
scenes = {s['id']: s for s in json.load(open(f'{w}/scenes.json'))}
cats = [c['name'] for c in json.load(open(f'{w}/world.json'))['categories']]
colours = ["red","blue","green","yellow","black","white","brown","orange"]
X, yc, yo, ys, split = [], [], [], [], []
for line in open(f'{w}/features/features.tsv'):
    key, n, b64 = line.rstrip('\n').split('\t')
    f = np.frombuffer(base64.b64decode(b64), dtype=np.float32).reshape(int(n), -1)
    s = scenes[key]
    for o in s['objects']:
        r = np.array(o['rect'], dtype=np.float32)
        bd = np.array([r[0]/640, r[1]/480, r[2]/640, r[3]/480], dtype=np.float32)
        i = np.argmin(np.abs(f[:, -6:-2] - bd).sum(1))
        X.append(f[i]); yc.append(cats.index(o['category'])); yo.append(colours.index(o['colour'])); ys.append(o['size'] == 'large'); split.append(s['split'] == 'train')
X = torch.tensor(np.array(X)); split = torch.tensor(split)
X = (X - X[split].mean(0)) / (X[split].std(0) + 1e-6)
def probe(y, n, name, hidden=0):
    y = torch.tensor(y, dtype=torch.long)
    torch.manual_seed(0)
    m = torch.nn.Linear(X.shape[1], n) if hidden == 0 else torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n))
    opt = torch.optim.Adam(m.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(1500):
        opt.zero_grad(); l = torch.nn.functional.cross_entropy(m(X[split]), y[split]); l.backward(); opt.step()
    acc = (m(X[~split]).argmax(1) == y[~split]).float().mean().item()
    maj = (y[~split] == y[split].mode().values).float().mean().item()
    print(f'{name:9s} {"linear" if hidden == 0 else "mlp"+str(hidden):7s} held-out accuracy {acc:.3f} (majority {maj:.3f}, {n} classes, {int(split.sum())} train / {int((~split).sum())} held-out objects)')
for h in (0, 256):
    probe(yc, len(cats), 'category', h); probe(yo, 8, 'colour', h); probe([int(v) for v in ys], 2, 'size', h)
