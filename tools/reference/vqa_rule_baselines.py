"""What a VQA model on the world could reach without learning the task: rule baselines by question type.

For the test split of WORLD, the official VQA accuracy (min(1, matches/3) over the ten leave-one-out
answer sets) of:
  majority  the most common training answer of the question type;
  tags      existence: is the noun among the image's detector tags; count: how many tags name it
            (at least 1); relation: a random tag other than the named one;
  probe     colour: two MLP probes trained on the training regions (category, colour) pick the
            region most likely to be the named category and read its colour;
  truth     the generating scene's answer (the metric's ceiling under the annotators' noise).

    /work/ref/venv/bin/python tools/reference/vqa_rule_baselines.py WORLD     # needs numpy + torch

On the 10,000-image 64-d world of tools/recipes/understanding.sh (test split, 2,515 questions):
colour majority 13.8 / probe 79.6; count 69.9 / tags 87.1; existence 59.5 / tags 92.7;
relation 2.7 / tags 49.4.
"""
import json, base64, sys, numpy as np, torch, collections, random
w = sys.argv[1]
scenes = {s['id']: s for s in json.load(open(f'{w}/scenes.json'))}
cats = [c['name'] for c in json.load(open(f'{w}/world.json'))['categories']]
colours = ["red","blue","green","yellow","black","white","brown","orange"]
feats = {}
for line in open(f'{w}/features/features.tsv'):
    key, n, b64 = line.rstrip('\n').split('\t')
    feats[key] = np.frombuffer(base64.b64decode(b64), dtype=np.float32).reshape(int(n), -1)
X, yc, yo, split = [], [], [], []
for k, s in scenes.items():
    f = feats[k]
    for o in s['objects']:
        r = np.array(o['rect'], dtype=np.float32); bd = np.array([r[0]/640, r[1]/480, r[2]/640, r[3]/480], dtype=np.float32)
        i = np.argmin(np.abs(f[:, -6:-2] - bd).sum(1))
        X.append(f[i]); yc.append(cats.index(o['category'])); yo.append(colours.index(o['colour'])); split.append(s['split'] == 'train')
X = torch.tensor(np.array(X)); split = torch.tensor(split)
mu, sd = X[split].mean(0), X[split].std(0) + 1e-6
def fit(y, n):
    y = torch.tensor(y); torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, n))
    opt = torch.optim.Adam(m.parameters(), 1e-2, weight_decay=1e-4)
    Xs = (X - mu) / sd
    for _ in range(800):
        opt.zero_grad(); torch.nn.functional.cross_entropy(m(Xs[split]), y[split]).backward(); opt.step()
    return m
mc, mo = fit(yc, len(cats)), fit(yo, 8)
def acc(pred, answers):
    ans = [a['answer'] for a in answers]
    return sum(min(1, sum(o == pred for o in ans[:i] + ans[i+1:]) / 3) for i in range(len(ans))) / len(ans)
A = json.load(open(f'{w}/vqa/train_annotations.json'))['annotations']
T = json.load(open(f'{w}/vqa/test_annotations.json'))['annotations']
Q = {q['question_id']: q['question'] for q in json.load(open(f'{w}/vqa/test_questions.json'))['questions']}
tags = {}
for line in open(f'{w}/labels/predictions.tsv'):
    k, j = line.rstrip('\n').split('\t'); tags[k] = [t['class'] for t in json.loads(j)['objects']]
maj = collections.defaultdict(collections.Counter)
for a in A: maj[a['question_type']][a['multiple_choice_answer']] += 1
res = collections.defaultdict(lambda: collections.defaultdict(list))
random.seed(0)
IRREGULAR = {'man': 'men', 'woman': 'women', 'child': 'children', 'sheep': 'sheep'}
def plural(x):
    if x in IRREGULAR: return IRREGULAR[x]
    if x.endswith('y') and x[-2] not in 'aeiou': return x[:-1] + 'ies'
    if x.endswith(('s', 'sh', 'ch', 'x')): return x + 'es'
    return x + 's'
for a in T:
    t, q, img = a['question_type'], Q[a['question_id']], a['image_id']
    res[t]['majority'].append(acc(maj[t].most_common(1)[0][0], a['answers']))
    res[t]['truth'].append(acc(a['multiple_choice_answer'], a['answers']))
    tg = tags[img]; ws = q.rstrip('?').split()
    if t == 'is there a':
        c = ws[3]; res[t]['tags'].append(acc('yes' if c in tg else 'no', a['answers']))
    elif t == 'how many':
        c = [x for x in cats if plural(x) == ws[2]]
        assert c, f'no category has the plural {ws[2]!r}'
        n = max(1, sum(1 for x in tg if x in c)); res[t]['tags'].append(acc(str(n), a['answers']))
    elif t == 'what is to the left of the':
        c = ws[-1]; other = [x for x in tg if x != c] or tg
        res[t]['tags'].append(acc(random.choice(other), a['answers']))
    elif t == 'what color is the':
        c = cats.index(ws[-1]); f = torch.tensor(feats[img]); fs = (f - mu) / sd
        with torch.no_grad():
            pc = mc(fs).softmax(1)[:, c]; po = mo(fs).argmax(1)
        res[t]['probe'].append(acc(colours[po[pc.argmax()]], a['answers']))
for t, d in res.items():
    print(f'{t:28s} {len(d["majority"]):5d} questions', {k: round(100 * sum(v) / len(v), 1) for k, v in d.items()})
