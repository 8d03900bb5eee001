namespace Natten.Kernels.BlockSparse;

/// <summary>Something that turns a concrete mask struct into work: the second half of a double dispatch.</summary>
internal interface IMaskVisitor
{
    void Visit<TMask>(TMask mask)
        where TMask : struct, IElementMask;
}

/// <summary>Something that turns a concrete bias struct into work.</summary>
internal interface IBiasVisitor
{
    void Visit<TBias>(TBias bias)
        where TBias : struct, IScoreBias;
}

/// <summary>A pattern's element mask as the device sees it: hands its struct (with device views) to a visitor.</summary>
internal interface IMaskSource
{
    void Accept(IMaskVisitor visitor);
}

/// <summary>A score bias as the device sees it.</summary>
internal interface IBiasSource
{
    void Accept(IBiasVisitor visitor);
}

/// <summary>One launch of the block-sparse kernels, generic in the mask and bias structs chosen at run time.</summary>
internal interface IBlockSparsePass
{
    void Run<TMask, TBias>(TMask mask, TBias bias)
        where TMask : struct, IElementMask
        where TBias : struct, IScoreBias;
}

/// <summary>
/// Picks the kernel instantiation for a pattern: the mask source names its struct, the bias source
/// its struct, and the pass launches <c>Kernel&lt;…, TMask, TBias&gt;</c> (compiled once per device and
/// combination). This is how a new pattern reaches the kernels without a kernel edit.
/// </summary>
internal static class BlockSparseDispatch
{
    /// <summary>A source for patterns without partial blocks or bias.</summary>
    public static IMaskSource NoMask { get; } = new AllowAllSource();

    public static IBiasSource NoBias { get; } = new NoBiasSource();

    public static void Run(IMaskSource mask, IBiasSource bias, IBlockSparsePass pass)
        => mask.Accept(new MaskStep(bias, pass));

    /// <summary>Composes two sources into one <see cref="AndMask{TFirst,TSecond}"/>.</summary>
    public static IMaskSource And(IMaskSource first, IMaskSource second) => new AndSource(first, second);

    private sealed class MaskStep(IBiasSource bias, IBlockSparsePass pass) : IMaskVisitor
    {
        public void Visit<TMask>(TMask mask)
            where TMask : struct, IElementMask
            => bias.Accept(new BiasStep<TMask>(mask, pass));
    }

    private sealed class BiasStep<TMask>(TMask mask, IBlockSparsePass pass) : IBiasVisitor
        where TMask : struct, IElementMask
    {
        public void Visit<TBias>(TBias bias)
            where TBias : struct, IScoreBias
            => pass.Run(mask, bias);
    }

    private sealed class AllowAllSource : IMaskSource
    {
        public void Accept(IMaskVisitor visitor) => visitor.Visit(default(AllowAll));
    }

    private sealed class NoBiasSource : IBiasSource
    {
        public void Accept(IBiasVisitor visitor) => visitor.Visit(default(NoBias));
    }

    private sealed class AndSource(IMaskSource first, IMaskSource second) : IMaskSource
    {
        public void Accept(IMaskVisitor visitor) => first.Accept(new First(second, visitor));

        private sealed class First(IMaskSource second, IMaskVisitor visitor) : IMaskVisitor
        {
            public void Visit<TFirst>(TFirst mask)
                where TFirst : struct, IElementMask
                => second.Accept(new Second<TFirst>(mask, visitor));
        }

        private sealed class Second<TFirst>(TFirst first, IMaskVisitor visitor) : IMaskVisitor
            where TFirst : struct, IElementMask
        {
            public void Visit<TSecond>(TSecond mask)
                where TSecond : struct, IElementMask
                => visitor.Visit(new AndMask<TFirst, TSecond>(first, mask));
        }
    }
}
