/// exp(x) in float32 by range reduction and the exponent bit trick: x = n ln2 + r with
/// |r| <= ln2/2, exp(r) by its Taylor polynomial to degree 6 (relative error about 1.5e-7),
/// 2^n written straight into the exponent bits. A plain scalar function the compiler vectorises;
/// libm's expf is 4x slower here and does not vectorise.
///
/// n is rounded by adding 1.5 * 2^23, which leaves it in the low mantissa bits: a checked
/// `Int32(n)` conversion would stop the loop from vectorising (measured: 6.5x slower). Every step
/// is an explicit fused multiply-add: Swift never contracts `p * r + c` by itself, and the chain of
/// separate multiplies and adds made softmax and SiLU twice as slow.
@inlinable @inline(__always)
public func fastExp(_ x: Float) -> Float {
    let x = x < -87.0 ? -87.0 : (x > 88.0 ? 88.0 : x)
    let shifted = (12_582_912.0 as Float).addingProduct(x, 1.442_695_04)
    let n = shifted - 12_582_912.0
    let r = x.addingProduct(n, -0.693_145_751_953_125).addingProduct(n, -1.428_606_765_330_187e-6)
    var p: Float = 1.0 / 720
    p = (1.0 / 120 as Float).addingProduct(p, r)
    p = (1.0 / 24 as Float).addingProduct(p, r)
    p = (1.0 / 6 as Float).addingProduct(p, r)
    p = (0.5 as Float).addingProduct(p, r)
    p = (1 as Float).addingProduct(p, r)
    p = (1 as Float).addingProduct(p, r)
    // the integer n sits in the low bits of `shifted`, offset by 0x4B40_0000
    return p * Float(bitPattern: (shifted.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
}

/// The logistic function 1 / (1 + e^-x).
@inlinable @inline(__always)
public func sigmoid(_ x: Float) -> Float { 1 / (1 + fastExp(-x)) }
