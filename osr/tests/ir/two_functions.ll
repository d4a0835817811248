; Two functions with OSR sites on one stack: top(n) calls mid(n) at site 1 ("deopt"(1, n, x)
; with x = 3n), and mid makes the hypercall `osr` through a statepoint at site 2
; ("deopt"(2, y) with y = n + 100). With the hypercall returning h:
;   old code:             mid = y + h,           top = mid + x
;   mid_cont (buf=[y,h]): mid = 10y + h
;   top_cont (buf=[n,x,r]): top = 1000r + x
; top(5), h = 7: 127 untransferred; 1057015 with both frames; 112015 with top only.
target triple = "x86_64-unknown-linux-gnu"

@osr = private unnamed_addr constant [4 x i8] c"osr\00"

declare ptr @PerformCustomCallback(ptr, ptr)
declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)
declare i64 @llvm.experimental.gc.result.i64(token)
declare ptr @llvm.experimental.gc.result.p0(token)

define i64 @top(i64 %n) #0 gc "shadow-stack" {
  %x = mul i64 %n, 3
  %tok = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 1, i32 0, ptr elementtype(i64 (i64)) @mid, i32 1, i32 0, i64 %n, i32 0, i32 0) [ "deopt"(i32 1, i64 %n, i64 %x) ]
  %r = call i64 @llvm.experimental.gc.result.i64(token %tok)
  %s = add i64 %r, %x
  ret i64 %s
}

define i64 @mid(i64 %n) #0 gc "shadow-stack" {
  %y = add i64 %n, 100
  %tok = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 2, i32 0, ptr elementtype(ptr (ptr, ptr)) @PerformCustomCallback, i32 2, i32 0, ptr @osr, ptr null, i32 0, i32 0) [ "deopt"(i32 2, i64 %y) ]
  %h = call ptr @llvm.experimental.gc.result.p0(token %tok)
  %hv = ptrtoint ptr %h to i64
  %s = add i64 %y, %hv
  ret i64 %s
}

define i64 @top_cont(ptr %buf) #0 {
  %px = getelementptr i64, ptr %buf, i64 1
  %x = load i64, ptr %px
  %pr = getelementptr i64, ptr %buf, i64 2
  %r = load i64, ptr %pr
  %r1000 = mul i64 %r, 1000
  %s = add i64 %r1000, %x
  ret i64 %s
}

define i64 @mid_cont(ptr %buf) #0 {
  %y = load i64, ptr %buf
  %ph = getelementptr i64, ptr %buf, i64 1
  %h = load i64, ptr %ph
  %y10 = mul i64 %y, 10
  %s = add i64 %y10, %h
  ret i64 %s
}

attributes #0 = { "frame-pointer"="all" }
