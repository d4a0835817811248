# Writes kinds.ll: python3 osr/tests/ir/gen_kinds.py > osr/tests/ir/kinds.ll (see README.md).
KINDS = ["i1", "i8", "i16", "i32", "i64", "ptr", "float", "double"]
P = "1099511628211"  # FNV-1a 64-bit prime
H0 = "-3750763034362895579"  # FNV offset basis 0xcbf29ce484222325 as i64
out = []
w = out.append
w("; Every value kind live across one OSR site, and call results of every kind (and void).")
w(";")
w("; kinds(s, which) computes 24 values of the 8 kinds from s (3 groups), plus 8 constants, keeps")
w("; all 32 live across a call chosen by `which` (0..8: produce_i1 ... produce_double, produce_void),")
w("; then hashes their zero-extended bits (FNV-1a over 64-bit words) and the call's result bits.")
w("; Site k+1 is the call of `which` = k; its continuation cont_<kind> hashes the transfer buffer")
w("; the same way and returns the hash xor 0x5a5a, so a transfer shows in the result. Each")
w("; produce_* makes the hypercall `osr` (constant name: the fast path, no record) and returns a")
w("; value of its kind computed from s. The expected values are computed in osr/tests/all/transfer.rs.")
w("; Generated: python3 osr/tests/ir/gen_kinds.py > osr/tests/ir/kinds.ll (edit the script).")
w('target triple = "x86_64-unknown-linux-gnu"')
w("")
w('@osr = private unnamed_addr constant [4 x i8] c"osr\\00"')
w("")
w("declare ptr @PerformCustomCallback(ptr, ptr)")
w("declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)")
for k in KINDS:
    suffix = {"ptr": "p0", "float": "f32", "double": "f64"}.get(k, k)
    w(f"declare {k} @llvm.experimental.gc.result.{suffix}(token)")
w("")
# producers
res = {
    "i1": ["%a = lshr i64 %s, 3", "%v = trunc i64 %a to i1"],
    "i8": ["%a = mul i64 %s, 17", "%b = add i64 %a, 9", "%v = trunc i64 %b to i8"],
    "i16": ["%a = mul i64 %s, 19", "%b = add i64 %a, 10", "%v = trunc i64 %b to i16"],
    "i32": ["%a = mul i64 %s, 23", "%b = add i64 %a, 11", "%v = trunc i64 %b to i32"],
    "i64": ["%a = mul i64 %s, 29", "%v = add i64 %a, 12"],
    "ptr": ["%a = mul i64 %s, 31", "%b = add i64 %a, 13", "%v = inttoptr i64 %b to ptr"],
    "float": ["%a = sitofp i64 %s to float", "%b = fmul float %a, 7.500000e-01", "%v = fadd float %b, 5.000000e-01"],
    "double": ["%a = sitofp i64 %s to double", "%b = fmul double %a, 2.250000e+00", "%v = fadd double %b, 6.250000e-02"],
}
for k in KINDS:
    w(f"define {k} @produce_{k}(i64 %s) #0 {{")
    w("  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)")
    for line in res[k]:
        w("  " + line)
    w(f"  ret {k} %v")
    w("}")
w("define void @produce_void(i64 %s) #0 {")
w("  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)")
w("  ret void")
w("}")
w("")
# values
vals = []  # (name, kind, lines)
def flt(x):
    return f"{x:.6e}"
for g in range(3):
    m = 16 * g
    vals.append((f"%b{g}", "i1", [f"%b{g}.s = lshr i64 %s, {g}", f"%b{g} = trunc i64 %b{g}.s to i1"]))
    for k, (mul, add) in zip(["i8", "i16", "i32"], [(3, 1), (5, 2), (7, 3)]):
        n = f"%{k}.{g}"
        vals.append((n, k, [f"{n}.m = mul i64 %s, {mul + m}", f"{n}.a = add i64 {n}.m, {add + g}", f"{n} = trunc i64 {n}.a to {k}"]))
    vals.append((f"%l{g}", "i64", [f"%l{g}.m = mul i64 %s, {11 + m}", f"%l{g} = add i64 %l{g}.m, {4 + g}"]))
    vals.append((f"%p{g}", "ptr", [f"%p{g}.m = mul i64 %s, {13 + m}", f"%p{g}.a = add i64 %p{g}.m, {5 + g}", f"%p{g} = inttoptr i64 %p{g}.a to ptr"]))
    vals.append((f"%f{g}", "float", [f"%f{g}.c = sitofp i64 %s to float", f"%f{g}.m = fmul float %f{g}.c, 5.000000e-01", f"%f{g} = fadd float %f{g}.m, {flt(0.25 + g)}"]))
    vals.append((f"%d{g}", "double", [f"%d{g}.c = sitofp i64 %s to double", f"%d{g}.m = fmul double %d{g}.c, 1.500000e+00", f"%d{g} = fadd double %d{g}.m, {flt(0.125 + g)}"]))
consts = [("true", "i1"), ("-3", "i8"), ("-300", "i16"), ("-7", "i32"), ("1099511627776", "i64"), ("null", "ptr"), ("1.500000e+00", "float"), ("2.500000e+00", "double")]
deopt_vals = [f"{k} {n}" for n, k, _ in vals] + [f"{k} {c}" for c, k in consts]
deopt = ", ".join(deopt_vals)
N = len(deopt_vals)
w(f"; {N} values: 3 groups of (i1, i8, i16, i32, i64, ptr, float, double) from s, then 8 constants.")
w("define i64 @kinds(i64 %s, i64 %which) #0 gc \"shadow-stack\" {")
w("entry:")
for n, k, lines in vals:
    for line in lines:
        w("  " + line)
cases = " ".join(f"i64 {i}, label %site.{k}" for i, k in enumerate(KINDS + ["void"]))
w(f"  switch i64 %which, label %site.void [ {cases} ]")
for i, k in enumerate(KINDS + ["void"]):
    site = i + 1
    w(f"site.{k}:")
    rt = "void" if k == "void" else k
    w(f"  %tok.{k} = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 {site}, i32 0, ptr elementtype({rt} (i64)) @produce_{k}, i32 1, i32 0, i64 %s, i32 0, i32 0) [ \"deopt\"(i32 {site}, {deopt}) ]")
    if k == "void":
        w(f"  br label %join")
        continue
    suffix = {"ptr": "p0", "float": "f32", "double": "f64"}.get(k, k)
    w(f"  %r.{k} = call {k} @llvm.experimental.gc.result.{suffix}(token %tok.{k})")
    if k == "i64":
        w(f"  %rb.{k} = add i64 %r.{k}, 0")
    elif k == "ptr":
        w(f"  %rb.{k} = ptrtoint ptr %r.{k} to i64")
    elif k == "float":
        w(f"  %r32.{k} = bitcast float %r.{k} to i32")
        w(f"  %rb.{k} = zext i32 %r32.{k} to i64")
    elif k == "double":
        w(f"  %rb.{k} = bitcast double %r.{k} to i64")
    else:
        w(f"  %rb.{k} = zext {k} %r.{k} to i64")
    w("  br label %join")
w("join:")
inc = ", ".join(f"[ %rb.{k}, %site.{k} ]" for k in KINDS) + ", [ 0, %site.void ]"
w(f"  %rbits = phi i64 {inc}")
inc = ", ".join(f"[ true, %site.{k} ]" for k in KINDS) + ", [ false, %site.void ]"
w(f"  %hasres = phi i1 {inc}")
h = H0
idx = 0
def bits(name, k):
    global idx
    idx += 1
    t = f"%x{idx}"
    if k == "i64":
        return name, []
    if k == "ptr":
        return t, [f"{t} = ptrtoint ptr {name} to i64"]
    if k == "float":
        return t, [f"{t}.i = bitcast float {name} to i32", f"{t} = zext i32 {t}.i to i64"]
    if k == "double":
        return t, [f"{t} = bitcast double {name} to i64"]
    return t, [f"{t} = zext {k} {name} to i64"]
allv = [(n, k) for n, k, _ in vals] + [(c, k) for c, k in consts]
for j, (n, k) in enumerate(allv):
    b, lines = bits(n, k)
    for line in lines:
        w("  " + line)
    w(f"  %hx{j} = xor i64 {h}, {b}")
    w(f"  %h{j} = mul i64 %hx{j}, {P}")
    h = f"%h{j}"
w(f"  %hr.x = xor i64 {h}, %rbits")
w(f"  %hr = mul i64 %hr.x, {P}")
w(f"  %hash = select i1 %hasres, i64 %hr, i64 {h}")
w("  ret i64 %hash")
w("}")
w("")
w("; FNV-1a over the first n slots of a transfer buffer.")
w("define i64 @hash_slots(ptr %buf, i64 %n) #0 {")
w("entry:")
w("  br label %loop")
w("loop:")
w("  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]")
w(f"  %h = phi i64 [ {H0}, %entry ], [ %h1, %loop ]")
w("  %p = getelementptr i64, ptr %buf, i64 %i")
w("  %x = load i64, ptr %p")
w("  %hx = xor i64 %h, %x")
w(f"  %h1 = mul i64 %hx, {P}")
w("  %i1 = add i64 %i, 1")
w("  %more = icmp ult i64 %i1, %n")
w("  br i1 %more, label %loop, label %exit")
w("exit:")
w("  ret i64 %h1")
w("}")
w("")
for k in KINDS + ["void"]:
    w(f"define i64 @cont_{k}(ptr %buf) #0 {{")
    n = N + (0 if k == "void" else 1)
    w(f"  %h = call i64 @hash_slots(ptr %buf, i64 {n})")
    w("  %m = xor i64 %h, 23130")
    w("  ret i64 %m")
    w("}")
w("")
w('attributes #0 = { "frame-pointer"="all" }')
print("\n".join(out))
