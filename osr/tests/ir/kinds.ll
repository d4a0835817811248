; Every value kind live across one OSR site, and call results of every kind (and void).
;
; kinds(s, which) computes 24 values of the 8 kinds from s (3 groups), plus 8 constants, keeps
; all 32 live across a call chosen by `which` (0..8: produce_i1 ... produce_double, produce_void),
; then hashes their zero-extended bits (FNV-1a over 64-bit words) and the call's result bits.
; Site k+1 is the call of `which` = k; its continuation cont_<kind> hashes the transfer buffer
; the same way and returns the hash xor 0x5a5a, so a transfer shows in the result. Each
; produce_* makes the hypercall `osr` (constant name: the fast path, no record) and returns a
; value of its kind computed from s. The expected values are computed in osr/tests/all/transfer.rs.
; Generated: python3 osr/tests/ir/gen_kinds.py > osr/tests/ir/kinds.ll (edit the script).
target triple = "x86_64-unknown-linux-gnu"

@osr = private unnamed_addr constant [4 x i8] c"osr\00"

declare ptr @PerformCustomCallback(ptr, ptr)
declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)
declare i1 @llvm.experimental.gc.result.i1(token)
declare i8 @llvm.experimental.gc.result.i8(token)
declare i16 @llvm.experimental.gc.result.i16(token)
declare i32 @llvm.experimental.gc.result.i32(token)
declare i64 @llvm.experimental.gc.result.i64(token)
declare ptr @llvm.experimental.gc.result.p0(token)
declare float @llvm.experimental.gc.result.f32(token)
declare double @llvm.experimental.gc.result.f64(token)

define i1 @produce_i1(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = lshr i64 %s, 3
  %v = trunc i64 %a to i1
  ret i1 %v
}
define i8 @produce_i8(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = mul i64 %s, 17
  %b = add i64 %a, 9
  %v = trunc i64 %b to i8
  ret i8 %v
}
define i16 @produce_i16(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = mul i64 %s, 19
  %b = add i64 %a, 10
  %v = trunc i64 %b to i16
  ret i16 %v
}
define i32 @produce_i32(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = mul i64 %s, 23
  %b = add i64 %a, 11
  %v = trunc i64 %b to i32
  ret i32 %v
}
define i64 @produce_i64(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = mul i64 %s, 29
  %v = add i64 %a, 12
  ret i64 %v
}
define ptr @produce_ptr(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = mul i64 %s, 31
  %b = add i64 %a, 13
  %v = inttoptr i64 %b to ptr
  ret ptr %v
}
define float @produce_float(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = sitofp i64 %s to float
  %b = fmul float %a, 7.500000e-01
  %v = fadd float %b, 5.000000e-01
  ret float %v
}
define double @produce_double(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %a = sitofp i64 %s to double
  %b = fmul double %a, 2.250000e+00
  %v = fadd double %b, 6.250000e-02
  ret double %v
}
define void @produce_void(i64 %s) #0 {
  %h = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  ret void
}

; 32 values: 3 groups of (i1, i8, i16, i32, i64, ptr, float, double) from s, then 8 constants.
define i64 @kinds(i64 %s, i64 %which) #0 gc "shadow-stack" {
entry:
  %b0.s = lshr i64 %s, 0
  %b0 = trunc i64 %b0.s to i1
  %i8.0.m = mul i64 %s, 3
  %i8.0.a = add i64 %i8.0.m, 1
  %i8.0 = trunc i64 %i8.0.a to i8
  %i16.0.m = mul i64 %s, 5
  %i16.0.a = add i64 %i16.0.m, 2
  %i16.0 = trunc i64 %i16.0.a to i16
  %i32.0.m = mul i64 %s, 7
  %i32.0.a = add i64 %i32.0.m, 3
  %i32.0 = trunc i64 %i32.0.a to i32
  %l0.m = mul i64 %s, 11
  %l0 = add i64 %l0.m, 4
  %p0.m = mul i64 %s, 13
  %p0.a = add i64 %p0.m, 5
  %p0 = inttoptr i64 %p0.a to ptr
  %f0.c = sitofp i64 %s to float
  %f0.m = fmul float %f0.c, 5.000000e-01
  %f0 = fadd float %f0.m, 2.500000e-01
  %d0.c = sitofp i64 %s to double
  %d0.m = fmul double %d0.c, 1.500000e+00
  %d0 = fadd double %d0.m, 1.250000e-01
  %b1.s = lshr i64 %s, 1
  %b1 = trunc i64 %b1.s to i1
  %i8.1.m = mul i64 %s, 19
  %i8.1.a = add i64 %i8.1.m, 2
  %i8.1 = trunc i64 %i8.1.a to i8
  %i16.1.m = mul i64 %s, 21
  %i16.1.a = add i64 %i16.1.m, 3
  %i16.1 = trunc i64 %i16.1.a to i16
  %i32.1.m = mul i64 %s, 23
  %i32.1.a = add i64 %i32.1.m, 4
  %i32.1 = trunc i64 %i32.1.a to i32
  %l1.m = mul i64 %s, 27
  %l1 = add i64 %l1.m, 5
  %p1.m = mul i64 %s, 29
  %p1.a = add i64 %p1.m, 6
  %p1 = inttoptr i64 %p1.a to ptr
  %f1.c = sitofp i64 %s to float
  %f1.m = fmul float %f1.c, 5.000000e-01
  %f1 = fadd float %f1.m, 1.250000e+00
  %d1.c = sitofp i64 %s to double
  %d1.m = fmul double %d1.c, 1.500000e+00
  %d1 = fadd double %d1.m, 1.125000e+00
  %b2.s = lshr i64 %s, 2
  %b2 = trunc i64 %b2.s to i1
  %i8.2.m = mul i64 %s, 35
  %i8.2.a = add i64 %i8.2.m, 3
  %i8.2 = trunc i64 %i8.2.a to i8
  %i16.2.m = mul i64 %s, 37
  %i16.2.a = add i64 %i16.2.m, 4
  %i16.2 = trunc i64 %i16.2.a to i16
  %i32.2.m = mul i64 %s, 39
  %i32.2.a = add i64 %i32.2.m, 5
  %i32.2 = trunc i64 %i32.2.a to i32
  %l2.m = mul i64 %s, 43
  %l2 = add i64 %l2.m, 6
  %p2.m = mul i64 %s, 45
  %p2.a = add i64 %p2.m, 7
  %p2 = inttoptr i64 %p2.a to ptr
  %f2.c = sitofp i64 %s to float
  %f2.m = fmul float %f2.c, 5.000000e-01
  %f2 = fadd float %f2.m, 2.250000e+00
  %d2.c = sitofp i64 %s to double
  %d2.m = fmul double %d2.c, 1.500000e+00
  %d2 = fadd double %d2.m, 2.125000e+00
  switch i64 %which, label %site.void [ i64 0, label %site.i1 i64 1, label %site.i8 i64 2, label %site.i16 i64 3, label %site.i32 i64 4, label %site.i64 i64 5, label %site.ptr i64 6, label %site.float i64 7, label %site.double i64 8, label %site.void ]
site.i1:
  %tok.i1 = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 1, i32 0, ptr elementtype(i1 (i64)) @produce_i1, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 1, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.i1 = call i1 @llvm.experimental.gc.result.i1(token %tok.i1)
  %rb.i1 = zext i1 %r.i1 to i64
  br label %join
site.i8:
  %tok.i8 = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 2, i32 0, ptr elementtype(i8 (i64)) @produce_i8, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 2, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.i8 = call i8 @llvm.experimental.gc.result.i8(token %tok.i8)
  %rb.i8 = zext i8 %r.i8 to i64
  br label %join
site.i16:
  %tok.i16 = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 3, i32 0, ptr elementtype(i16 (i64)) @produce_i16, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 3, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.i16 = call i16 @llvm.experimental.gc.result.i16(token %tok.i16)
  %rb.i16 = zext i16 %r.i16 to i64
  br label %join
site.i32:
  %tok.i32 = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 4, i32 0, ptr elementtype(i32 (i64)) @produce_i32, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 4, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.i32 = call i32 @llvm.experimental.gc.result.i32(token %tok.i32)
  %rb.i32 = zext i32 %r.i32 to i64
  br label %join
site.i64:
  %tok.i64 = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 5, i32 0, ptr elementtype(i64 (i64)) @produce_i64, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 5, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.i64 = call i64 @llvm.experimental.gc.result.i64(token %tok.i64)
  %rb.i64 = add i64 %r.i64, 0
  br label %join
site.ptr:
  %tok.ptr = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 6, i32 0, ptr elementtype(ptr (i64)) @produce_ptr, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 6, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.ptr = call ptr @llvm.experimental.gc.result.p0(token %tok.ptr)
  %rb.ptr = ptrtoint ptr %r.ptr to i64
  br label %join
site.float:
  %tok.float = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 7, i32 0, ptr elementtype(float (i64)) @produce_float, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 7, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.float = call float @llvm.experimental.gc.result.f32(token %tok.float)
  %r32.float = bitcast float %r.float to i32
  %rb.float = zext i32 %r32.float to i64
  br label %join
site.double:
  %tok.double = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 8, i32 0, ptr elementtype(double (i64)) @produce_double, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 8, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  %r.double = call double @llvm.experimental.gc.result.f64(token %tok.double)
  %rb.double = bitcast double %r.double to i64
  br label %join
site.void:
  %tok.void = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 9, i32 0, ptr elementtype(void (i64)) @produce_void, i32 1, i32 0, i64 %s, i32 0, i32 0) [ "deopt"(i32 9, i1 %b0, i8 %i8.0, i16 %i16.0, i32 %i32.0, i64 %l0, ptr %p0, float %f0, double %d0, i1 %b1, i8 %i8.1, i16 %i16.1, i32 %i32.1, i64 %l1, ptr %p1, float %f1, double %d1, i1 %b2, i8 %i8.2, i16 %i16.2, i32 %i32.2, i64 %l2, ptr %p2, float %f2, double %d2, i1 true, i8 -3, i16 -300, i32 -7, i64 1099511627776, ptr null, float 1.500000e+00, double 2.500000e+00) ]
  br label %join
join:
  %rbits = phi i64 [ %rb.i1, %site.i1 ], [ %rb.i8, %site.i8 ], [ %rb.i16, %site.i16 ], [ %rb.i32, %site.i32 ], [ %rb.i64, %site.i64 ], [ %rb.ptr, %site.ptr ], [ %rb.float, %site.float ], [ %rb.double, %site.double ], [ 0, %site.void ]
  %hasres = phi i1 [ true, %site.i1 ], [ true, %site.i8 ], [ true, %site.i16 ], [ true, %site.i32 ], [ true, %site.i64 ], [ true, %site.ptr ], [ true, %site.float ], [ true, %site.double ], [ false, %site.void ]
  %x1 = zext i1 %b0 to i64
  %hx0 = xor i64 -3750763034362895579, %x1
  %h0 = mul i64 %hx0, 1099511628211
  %x2 = zext i8 %i8.0 to i64
  %hx1 = xor i64 %h0, %x2
  %h1 = mul i64 %hx1, 1099511628211
  %x3 = zext i16 %i16.0 to i64
  %hx2 = xor i64 %h1, %x3
  %h2 = mul i64 %hx2, 1099511628211
  %x4 = zext i32 %i32.0 to i64
  %hx3 = xor i64 %h2, %x4
  %h3 = mul i64 %hx3, 1099511628211
  %hx4 = xor i64 %h3, %l0
  %h4 = mul i64 %hx4, 1099511628211
  %x6 = ptrtoint ptr %p0 to i64
  %hx5 = xor i64 %h4, %x6
  %h5 = mul i64 %hx5, 1099511628211
  %x7.i = bitcast float %f0 to i32
  %x7 = zext i32 %x7.i to i64
  %hx6 = xor i64 %h5, %x7
  %h6 = mul i64 %hx6, 1099511628211
  %x8 = bitcast double %d0 to i64
  %hx7 = xor i64 %h6, %x8
  %h7 = mul i64 %hx7, 1099511628211
  %x9 = zext i1 %b1 to i64
  %hx8 = xor i64 %h7, %x9
  %h8 = mul i64 %hx8, 1099511628211
  %x10 = zext i8 %i8.1 to i64
  %hx9 = xor i64 %h8, %x10
  %h9 = mul i64 %hx9, 1099511628211
  %x11 = zext i16 %i16.1 to i64
  %hx10 = xor i64 %h9, %x11
  %h10 = mul i64 %hx10, 1099511628211
  %x12 = zext i32 %i32.1 to i64
  %hx11 = xor i64 %h10, %x12
  %h11 = mul i64 %hx11, 1099511628211
  %hx12 = xor i64 %h11, %l1
  %h12 = mul i64 %hx12, 1099511628211
  %x14 = ptrtoint ptr %p1 to i64
  %hx13 = xor i64 %h12, %x14
  %h13 = mul i64 %hx13, 1099511628211
  %x15.i = bitcast float %f1 to i32
  %x15 = zext i32 %x15.i to i64
  %hx14 = xor i64 %h13, %x15
  %h14 = mul i64 %hx14, 1099511628211
  %x16 = bitcast double %d1 to i64
  %hx15 = xor i64 %h14, %x16
  %h15 = mul i64 %hx15, 1099511628211
  %x17 = zext i1 %b2 to i64
  %hx16 = xor i64 %h15, %x17
  %h16 = mul i64 %hx16, 1099511628211
  %x18 = zext i8 %i8.2 to i64
  %hx17 = xor i64 %h16, %x18
  %h17 = mul i64 %hx17, 1099511628211
  %x19 = zext i16 %i16.2 to i64
  %hx18 = xor i64 %h17, %x19
  %h18 = mul i64 %hx18, 1099511628211
  %x20 = zext i32 %i32.2 to i64
  %hx19 = xor i64 %h18, %x20
  %h19 = mul i64 %hx19, 1099511628211
  %hx20 = xor i64 %h19, %l2
  %h20 = mul i64 %hx20, 1099511628211
  %x22 = ptrtoint ptr %p2 to i64
  %hx21 = xor i64 %h20, %x22
  %h21 = mul i64 %hx21, 1099511628211
  %x23.i = bitcast float %f2 to i32
  %x23 = zext i32 %x23.i to i64
  %hx22 = xor i64 %h21, %x23
  %h22 = mul i64 %hx22, 1099511628211
  %x24 = bitcast double %d2 to i64
  %hx23 = xor i64 %h22, %x24
  %h23 = mul i64 %hx23, 1099511628211
  %x25 = zext i1 true to i64
  %hx24 = xor i64 %h23, %x25
  %h24 = mul i64 %hx24, 1099511628211
  %x26 = zext i8 -3 to i64
  %hx25 = xor i64 %h24, %x26
  %h25 = mul i64 %hx25, 1099511628211
  %x27 = zext i16 -300 to i64
  %hx26 = xor i64 %h25, %x27
  %h26 = mul i64 %hx26, 1099511628211
  %x28 = zext i32 -7 to i64
  %hx27 = xor i64 %h26, %x28
  %h27 = mul i64 %hx27, 1099511628211
  %hx28 = xor i64 %h27, 1099511627776
  %h28 = mul i64 %hx28, 1099511628211
  %x30 = ptrtoint ptr null to i64
  %hx29 = xor i64 %h28, %x30
  %h29 = mul i64 %hx29, 1099511628211
  %x31.i = bitcast float 1.500000e+00 to i32
  %x31 = zext i32 %x31.i to i64
  %hx30 = xor i64 %h29, %x31
  %h30 = mul i64 %hx30, 1099511628211
  %x32 = bitcast double 2.500000e+00 to i64
  %hx31 = xor i64 %h30, %x32
  %h31 = mul i64 %hx31, 1099511628211
  %hr.x = xor i64 %h31, %rbits
  %hr = mul i64 %hr.x, 1099511628211
  %hash = select i1 %hasres, i64 %hr, i64 %h31
  ret i64 %hash
}

; FNV-1a over the first n slots of a transfer buffer.
define i64 @hash_slots(ptr %buf, i64 %n) #0 {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %h = phi i64 [ -3750763034362895579, %entry ], [ %h1, %loop ]
  %p = getelementptr i64, ptr %buf, i64 %i
  %x = load i64, ptr %p
  %hx = xor i64 %h, %x
  %h1 = mul i64 %hx, 1099511628211
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %n
  br i1 %more, label %loop, label %exit
exit:
  ret i64 %h1
}

define i64 @cont_i1(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_i8(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_i16(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_i32(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_i64(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_ptr(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_float(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_double(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 33)
  %m = xor i64 %h, 23130
  ret i64 %m
}
define i64 @cont_void(ptr %buf) #0 {
  %h = call i64 @hash_slots(ptr %buf, i64 32)
  %m = xor i64 %h, 23130
  ret i64 %m
}

attributes #0 = { "frame-pointer"="all" }
